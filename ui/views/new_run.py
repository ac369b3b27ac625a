"""New run: upload a video, choose backends and rounds, and queue a dub job for `foleyloop worker`."""

import streamlit as st

from agent import backends
from agent.config import RunConfig
from ui import common, uploads
from ui.components import md_escape

store, cfg = common.store(), common.settings()
st.title("New run")

types = list(cfg.upload_types)
# No ``type=`` filter: Streamlit would raise inside the widget for another extension; the check below says
# what is wrong in plain words instead.
uploaded = st.file_uploader(f"Video ({', '.join(types)}; at most {cfg.upload_max_mb} MB)", key="new:file")


def _pick(role: str, label: str, allow_follow: bool = False) -> str | None:
    names = sorted(backends.REGISTRY[role])
    options = (["(same family as the watcher)"] if allow_follow else []) + names
    default = 0 if allow_follow else (names.index("offline") if "offline" in names else 0)
    choice = st.selectbox(label, options, index=default, key=f"new:{role}")
    return None if allow_follow and choice == options[0] else choice


c1, c2 = st.columns(2)
with c1:
    watcher = _pick("watcher", "Watcher (writes the sound plan)")
    renderer = _pick("renderer", "Renderer (makes the audio)")
    critic = _pick("critic", "Critic (scores each round)")
    refiner = _pick("refiner", "Refiner (rewrites the plan)", allow_follow=True)
with c2:
    rounds = st.number_input("Round cap", 1, 20, 3, key="new:rounds")
    seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="new:seed")
    max_duration = st.number_input("Refuse videos longer than (s)", 1.0, 3600.0, 600.0, key="new:maxdur")
    keep = st.radio("Original soundtrack", ["drop", "mix"], horizontal=True, key="new:keep")
    review = st.checkbox("Pause for me to review the plan before rendering", key="new:review")
st.caption("`foleyloop models` lists which backends have their weights on this machine.")

if uploaded is not None:
    try:
        uploads.check_name_and_size(uploaded.name, uploaded.size, uploads.UploadLimits(
            cfg.upload_max_bytes, cfg.upload_types, float(max_duration)))
    except uploads.UploadRejected as exc:
        st.error(md_escape(exc))  # names the uploaded file: user text

read_only = common.read_only_note(store, "new runs cannot be created")
if st.button("Create run", type="primary", key="new:create", disabled=read_only):
    if uploaded is None:
        st.error("Choose a video file first.")
        st.stop()
    try:
        run_cfg = RunConfig(watcher=watcher, renderer=renderer, critic=critic, refiner=refiner, rounds=int(rounds),
                            seed=int(seed), review=review, max_duration_s=float(max_duration), keep_original=keep)
    except ValueError as exc:
        st.error(f"These settings are not valid: {md_escape(exc)}")
        st.stop()
    limits = uploads.UploadLimits(cfg.upload_max_bytes, cfg.upload_types, run_cfg.max_duration_s)
    uploaded.seek(0)
    try:
        accepted = uploads.accept(uploaded, uploaded.name, uploaded.size, store, limits)
    except uploads.UploadRejected as exc:
        st.error(f"{md_escape(exc)} Nothing was stored.")
        st.stop()
    from agent import runs  # slow to import; only this button needs it

    run_id = runs.create_dub_run(store, accepted.path, run_cfg, status="queued")
    job = store.enqueue("dub", run_id)
    st.success(f"Run {run_id} is queued as job {job.id} ({accepted.info.duration_s:.1f} s, "
               f"{accepted.info.width}×{accepted.info.height}). A worker (`foleyloop worker`) will pick it up.")
    st.page_link("views/run.py", label=f"Open run {run_id}", icon=":material/movie:", query_params={"run": run_id})
