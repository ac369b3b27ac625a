"""LangGraph nodes. Each is thin: it reads ids from the state, calls a backend or the store, writes ids back.

Every node is idempotent against the database, because a run killed between a node's side effects
and its checkpoint re-runs that node on resume: it then finds its round/artifact and reuses it.
Progress and timings are not the nodes' business: ``agent.runs`` records them from the graph's task stream.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import tempfile
from pathlib import Path

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agent import backends, outputs
from agent import segments as segmenting
from agent.state import RunContext, RunState
from contract.errors import BackendError, UserError
from contract.plan import Critique, Plan, PlanInvalid
from reasoning.policy import decide
from store import media
from store.db import Store
from store.media import VideoInfo
from store.schema import Round, Run

log = logging.getLogger(__name__)


def check_video(path: str | Path, max_duration_s: float) -> VideoInfo:
    """Probe a video and apply the duration limit (the one place both are done; MediaError on bad input)."""
    info = media.probe(path)
    if info.duration_s > max_duration_s:
        raise media.MediaError(f"{path}: {info.duration_s:.1f}s is longer than --max-duration {max_duration_s:.0f}s")
    return info


def _info(ctx: RunContext, run_id: str) -> VideoInfo | None:
    run = ctx.store.get_run(run_id)
    data = json.loads(run.video_info_json or "{}")
    return VideoInfo(**data) if data else None


def _plan(rnd: Round) -> Plan:
    """A stored round's plan: types checked, size bounds not (a row older than the bounds still runs)."""
    return Plan.from_stored(rnd.plan_json)


def plan_length(run: Run) -> float | None:
    """What a new plan for ``run`` must last (``Plan.parse_user``'s ``video_duration_s``): the video's length, or
    the edited audio's; None for text-to-audio, whose plans are capped instead. PlanInvalid for a run with no
    recorded length (there is nothing to check a plan against)."""
    if run.kind == "text":
        return None
    if not run.duration_s:
        raise PlanInvalid(f"run {run.id} has no recorded length to check a plan against")
    return float(run.duration_s)


def probe(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """The input was probed when the run was recorded (``agent.runs.create_dub_run``); probe only a run that was not."""
    ctx = runtime.context
    run = ctx.store.get_run(state["run_id"])
    if json.loads(run.video_info_json or "{}"):
        return {}
    info = check_video(state["video_path"], ctx.cfg.max_duration_s)
    ctx.store.update_run(state["run_id"], video_info_json=info.to_dict(), duration_s=info.duration_s)
    return {}


def watch(state: RunState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    existing = [r for r in ctx.store.rounds(state["run_id"], branch=state["branch"]) if r.status != "failed"]
    if existing:  # watched before a crash: reuse it
        return {"current_round_id": existing[0].id, "round_index": 0}
    watcher = backends.get("watcher", ctx.cfg)
    try:
        result = watcher.watch(Path(state["video_path"]), _info(ctx, state["run_id"]))
    except BackendError as exc:  # keep the model's raw text on a failed round, then fail the run
        ctx.store.add_round(run_id=state["run_id"], index=0, branch=state["branch"], author="watcher",
                            status="failed", seed=state["seed"], error=str(exc)[:2000],
                            raw_output=exc.raw_output[:200_000], model_id=getattr(exc, "model_id", watcher.model_id),
                            prompt_version=getattr(exc, "prompt_version", ""))
        raise
    plan = result.plan.model_copy(update={"provenance": result.plan.provenance.model_copy(
        update={"author": "watcher", "backend": watcher.name, "model_id": result.model_id,
                "prompt_version": result.prompt_version, "round": 0})})
    plan = _segmented(ctx, plan, result.meta, Path(state["video_path"]), _info(ctx, state["run_id"]))
    rnd = ctx.store.add_round(run_id=state["run_id"], index=0, branch=state["branch"], author="watcher",
                              plan_json=plan.to_json(), seed=state["seed"], model_id=result.model_id,
                              prompt_version=result.prompt_version, raw_output=result.raw_output)
    return {"current_round_id": rnd.id, "round_index": 0}


def _segment_options(ctx: RunContext) -> dict:
    return dict(ctx.cfg.options.get("segments") or {})


def _segmented(ctx: RunContext, plan: Plan, meta: dict, video: Path, info: VideoInfo | None) -> Plan:
    """The watcher's plan cut into segments when the video needs more than one render window (agent.segments)."""
    opts = _segment_options(ctx)
    if info is None or plan.segments is not None or opts.get("enabled", True) is False:
        return plan
    window = segmenting.max_window_s(opts, backends.get("renderer", ctx.cfg))
    return segmenting.attach(plan, meta or {}, video, info, window)


def _segment_run(ctx: RunContext, state: RunState, plan: Plan) -> segmenting.SegmentRun:
    video = Path(state["video_path"]) if state.get("video_path") else None
    return segmenting.prepare(plan, video, _info(ctx, state["run_id"]), ctx.store.home / "cache", _renderer_key(ctx))


def _renderer_key(ctx: RunContext) -> str:
    """What besides the plan decides the renderer's audio (its options, device, dtype): part of the segment cache
    key, shared by every run under this home."""
    opts = backends.options_for("renderer", ctx.cfg)
    return json.dumps([opts.name, dict(opts.params), opts.device, opts.dtype], sort_keys=True, default=str)


def review(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """Pause for a human: the resume value approves the plan or carries an edited one."""
    ctx = runtime.context
    rnd = ctx.store.get_round(state["current_round_id"])
    if rnd.author == "human":  # already reviewed before a crash
        return {}
    ctx.store.update_run(state["run_id"], status="review")
    answer = interrupt({"run_id": state["run_id"], "round_id": rnd.id, "plan": rnd.plan_json})
    ctx.store.update_run(state["run_id"], status="running")
    edited = answer.get("plan") if isinstance(answer, dict) else None
    if not edited:
        return {}
    plan = Plan.parse_user(edited, video_duration_s=plan_length(ctx.store.get_run(state["run_id"])))
    plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(
        update={"author": "human", "parent_plan_id": _plan(rnd).plan_id, "round": rnd.index})})
    ctx.store.update_round(rnd.id, status="replaced")
    new = ctx.store.add_round(run_id=state["run_id"], index=rnd.index, branch=rnd.branch, author="human",
                              parent_round_id=rnd.id, plan_json=plan.to_json(), seed=rnd.seed)
    return {"current_round_id": new.id}


def render(state: RunState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    rnd = ctx.store.get_round(state["current_round_id"])
    if rnd.audio_artifact_id is not None:
        return {}
    ctx.devices.before("render")
    renderer = backends.get("renderer", ctx.cfg)
    video = Path(state["video_path"]) if state.get("video_path") else None
    tmp_dir = ctx.store.home / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(rnd)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        if plan.segments:  # a long or multi-shot video: segment by segment, unchanged segments reused
            result = segmenting.render(renderer, plan, rnd.seed, Path(tmp) / "audio.wav",
                                       _segment_run(ctx, state, plan))
        else:
            result = renderer.render(plan, video, _info(ctx, state["run_id"]), rnd.seed, Path(tmp) / "audio.wav")
        art = ctx.store.put_file(result.audio_path, kind="audio", run_id=state["run_id"], mime="audio/wav", move=True)
    timings = json.loads(rnd.timings_json or "{}") | {"render_meta": _small(result.meta)}
    ctx.store.update_round(rnd.id, audio_artifact_id=art.id, status="rendered", timings_json=timings)
    return {}


def _small(meta: dict) -> dict:
    text = json.dumps(meta, default=str)
    return json.loads(text) if len(text) < 20_000 else {"truncated": True}


def critique(state: RunState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    rnd = ctx.store.get_round(state["current_round_id"])
    if rnd.critique_json is None:
        critic = backends.get("critic", ctx.cfg)
        audio = ctx.store.artifact_path(rnd.audio_artifact_id)
        video = Path(state["video_path"]) if state.get("video_path") else None
        plan = _plan(rnd)
        if plan.segments:
            rendered = json.loads(rnd.timings_json or "{}").get("render_meta", {}).get("segments", {}).get("rendered")
            crit = segmenting.critique(critic, backends.get("renderer", ctx.cfg), plan, rnd.seed,
                                       _segment_run(ctx, state, plan), rendered)
        else:
            crit = critic.critique(plan, audio, video, _info(ctx, state["run_id"]))
        s = crit.scores
        ctx.store.update_round(rnd.id, critique_json=crit.to_json(), status="scored", score_semantic=s["semantic"],
                               score_temporal=s["temporal"], score_aesthetic=s["aesthetic"],
                               score_spatial=s["spatial"], score_overall=crit.overall)
    return {}


def decide_node(state: RunState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    rnd = ctx.store.get_round(state["current_round_id"])
    crit = Critique.from_json(rnd.critique_json)
    best = ctx.store.get_round(state["best_round_id"]) if state.get("best_round_id") is not None else None
    best_scores = Critique.from_json(best.critique_json).scores if best is not None and best.critique_json else None
    d = decide(crit, ctx.cfg.thresholds, rounds_done=state["round_index"] + 1, rounds_cap=state["rounds_cap"],
               best_overall=state.get("best_overall"),
               rounds_without_improvement=state.get("rounds_without_improvement", 0),
               min_improvement=ctx.cfg.min_improvement, patience=ctx.cfg.patience, best_scores=best_scores,
               aimed_at=_aimed_at(state, rnd, best, ctx.cfg.thresholds))
    if d.evidence:  # why it was (not) kept, beside what the refiner changed (the studio lists them)
        verdict = f"loop: {'kept' if d.improved else 'not kept'} against round {best.index}: {d.evidence}"
        log.info("round %s: %s", rnd.index, verdict)
        changes = json.loads(rnd.changes_json or "[]")
        if not any(str(c).startswith("loop: ") for c in changes):  # a decide re-run after a crash adds nothing
            ctx.store.update_round(rnd.id, changes_json=json.dumps(changes + [verdict]))
    update = {"best_overall": d.best_overall, "rounds_without_improvement": d.rounds_without_improvement,
              "stop_reason": d.reason}
    if d.improved or state.get("best_round_id") is None:
        update["best_round_id"] = rnd.id
    ctx.store.update_run(state["run_id"], n_rounds=len(ctx.store.rounds(state["run_id"])))
    return update


def _aimed_at(state: RunState, rnd: Round, best: Round | None, thresholds: dict[str, float]) -> list[str] | None:
    """The dimensions the refine that made ``rnd`` acted on: what the refiner said (state ``aimed_at``, set by
    ``refine`` for this round), else the dimensions it was asked to fix (the best round's failing ones), else
    None (every dimension: a fork or a resumed round whose refine is not known)."""
    if rnd.author != "refiner":
        return None
    said = state.get("aimed_at")
    if said is not None and state.get("aimed_round_id") == rnd.id:
        return list(said)
    if best is not None and best.critique_json:
        return Critique.from_json(best.critique_json).failing(thresholds) or None
    return None


def refine(state: RunState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    best = ctx.store.get_round(state["best_round_id"])
    next_index = state["round_index"] + 1
    for rnd in ctx.store.rounds(state["run_id"], branch=state["branch"]):
        if rnd.index == next_index and rnd.author == "refiner":  # refined before a crash
            return {"current_round_id": rnd.id, "round_index": next_index}
    refiner = backends.get("refiner", ctx.cfg)
    crit = Critique.from_json(best.critique_json)
    failing = crit.failing(ctx.cfg.thresholds) or [d for d, v in crit.scores.items() if v is not None]
    video = Path(state["video_path"]) if state.get("video_path") else None
    best_plan = _plan(best)
    try:
        if best_plan.segments and crit.segments:  # only the weak segments are rewritten
            result = segmenting.refine(refiner, best_plan, crit, ctx.cfg.thresholds, next_index, best.seed,
                                       _segment_run(ctx, state, best_plan))
        else:
            result = refiner.refine(best_plan, crit, failing, next_index, best.seed, video=video,
                                    info=_info(ctx, state["run_id"]))
    except BackendError as exc:  # the best round so far stands; the failed attempt is kept for review
        ctx.store.add_round(run_id=state["run_id"], index=next_index, branch=state["branch"], author="refiner",
                            parent_round_id=best.id, status="failed", seed=best.seed, error=str(exc)[:2000],
                            raw_output=exc.raw_output[:200_000], plan_json=best.plan_json,
                            prompt_version=getattr(exc, "prompt_version", ""),
                            model_id=getattr(exc, "model_id", getattr(refiner, "model_id", refiner.name)))
        return {"stop_reason": f"refiner_failed: {str(exc)[:200]}"}
    if getattr(result, "stop", ""):  # nothing audible left to try: no round is rendered
        return {"stop_reason": f"refiner_stopped: {result.stop[:200]}"}
    same = _same_audio_as(ctx, state, result.plan, result.seed)
    if same is not None:  # the renderer says this plan sounds exactly like a round already heard
        return {"stop_reason": f"refiner_stopped: its plan renders the same audio as round {same}"}
    plan = result.plan.model_copy(update={"provenance": result.plan.provenance.model_copy(
        update={"author": "refiner", "round": next_index, "backend": refiner.name})})
    rnd = ctx.store.add_round(run_id=state["run_id"], index=next_index, branch=state["branch"], author="refiner",
                              parent_round_id=best.id, plan_json=plan.to_json(), seed=result.seed,
                              model_id=getattr(refiner, "model_id", refiner.name),
                              prompt_version=result.prompt_version, raw_output=result.raw_output,
                              changes_json=result.changes)
    aimed = getattr(result, "aimed_at", None)
    return {"current_round_id": rnd.id, "round_index": next_index,
            "aimed_at": list(aimed) if aimed is not None else None, "aimed_round_id": rnd.id}


def _same_audio_as(ctx: RunContext, state: RunState, plan, seed: int) -> int | None:
    """Index of an earlier round of this branch whose audio ``plan`` would reproduce, when the renderer can tell
    without rendering (an optional ``fingerprint(plan, seed)``); None otherwise."""
    renderer = backends.get("renderer", ctx.cfg)
    fingerprint = getattr(renderer, "fingerprint", None)
    if plan.segments:  # segment by segment (each renders on its own)
        try:
            return segmenting.same_audio_as(renderer, plan, seed, [
                (r.index, _plan(r), r.seed) for r in ctx.store.rounds(state["run_id"], branch=state["branch"])
                if r.audio_artifact_id is not None and r.plan_json])
        except Exception as exc:  # noqa: BLE001 - a failed shortcut only costs a render
            log.warning("segment fingerprints failed (%s: %s); rendering the round", type(exc).__name__, exc)
            return None
    if fingerprint is None:
        return None
    try:
        mine = fingerprint(plan, seed)
        for rnd in ctx.store.rounds(state["run_id"], branch=state["branch"]):
            if rnd.audio_artifact_id is not None and rnd.plan_json and fingerprint(_plan(rnd), rnd.seed) == mine:
                return rnd.index
    except Exception as exc:  # noqa: BLE001 - a failed shortcut only costs a render
        log.warning("renderer fingerprint failed (%s: %s); rendering the round", type(exc).__name__, exc)
    return None


def finalize(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """Publish the branch's best and record it; the run's best is the best finished branch, never just the latest."""
    ctx = runtime.context
    run_id, branch = state["run_id"], state["branch"]
    best = ctx.store.get_round(state["best_round_id"])
    audio_path = ctx.store.artifact_path(best.audio_artifact_id)
    out = state.get("out_path")
    record = {"status": "done", "stop_reason": state.get("stop_reason"), "best_round_id": best.id,
              "best_overall": best.score_overall}
    if out:
        out_path = Path(out)
        with outputs.staging(out_path) as tmp:
            if state.get("video_path"):
                # The WAV is streamed into the mux in blocks: an hour of soundtrack is never held in memory.
                media.mux(state["video_path"], audio_path, None, tmp, keep_original=ctx.cfg.keep_original,
                          info=_info(ctx, run_id))
                art = ctx.store.put_file(tmp, kind="video", run_id=run_id,
                                         mime=mimetypes.guess_type(out_path.name)[0] or "video/mp4")
                record["output_artifact_id"] = art.id
            else:
                media.copy_file(audio_path, tmp)
            _publish(ctx.store, state, tmp, out_path)
        record["output_path"] = str(out_path.resolve())
    _prune_segments(ctx, state, best)
    branches = ctx.store.get_run(run_id).branches()
    branches[str(branch)] = record
    top = best_branch(branches) or record
    fields = {"branches_json": branches, "best_round_id": top["best_round_id"], "best_overall": top["best_overall"],
              "output_path": top.get("output_path"), "output_artifact_id": top.get("output_artifact_id"),
              "stop_reason": top.get("stop_reason"), "n_rounds": len(ctx.store.rounds(run_id))}
    if branch == 0:  # the run's own rounds; a fork never changes the run's status (see agent.runs)
        fields |= {"status": "done", "error": None}
    ctx.devices.release_all()
    ctx.store.update_run(run_id, **fields)
    return {"output_path": record.get("output_path")}


def _prune_segments(ctx: RunContext, state: RunState, best: Round) -> None:
    """A segmented branch keeps the cached segment audio of its best round only (see ``agent.segments.prune``)."""
    kept = _plan(best)
    if not kept.segments:
        return
    done = [(_plan(r), r.seed) for r in ctx.store.rounds(state["run_id"], branch=state["branch"])
            if r.id != best.id and r.plan_json and r.status != "failed"]
    try:
        segmenting.prune(backends.get("renderer", ctx.cfg), done, (kept, best.seed),
                         segmenting.SegmentRun(ctx.store.home / "cache" / "segments", None, _video_key(state),
                                               _renderer_key(ctx)))
    except OSError as exc:  # a cache that cannot be tidied is not a failed run
        log.warning("could not prune the segment cache: %s", exc)


def _video_key(state: RunState) -> str:
    return segmenting.video_key(Path(state["video_path"])) if state.get("video_path") else ""


def best_branch(branches: dict) -> dict | None:
    """The finished branch record with the highest best score (the earliest branch on a tie)."""
    top, top_score = None, None
    for _, rec in sorted(branches.items(), key=lambda kv: int(kv[0])):
        if branch_status(rec) != "done" or rec.get("best_round_id") is None:
            continue
        score = rec.get("best_overall")
        if top is None or (score is not None and (top_score is None or score > top_score)):
            top, top_score = rec, score
    return top


def _publish(store: Store, state: RunState, tmp: Path, out: Path) -> None:
    """Move the finished file into place without ever replacing a file the user did not hand over (--force)."""
    run_id, branch = state["run_id"], state["branch"]
    force = bool(state.get("out_force"))
    refused = UserError(f"{out} appeared while run {run_id} was working; nothing was overwritten (move it away, "
                        f"then `foleyloop resume {run_id}`)")
    if not force and os.path.lexists(out):
        if branch_record(store.get_run(run_id), branch).get("publishing") != str(out):
            raise refused
        force = True  # this run published it before it was killed: finish that
    update_branch(store, run_id, branch, publishing=str(out))
    try:
        outputs.publish(tmp, out, force=force)
    except FileExistsError:
        raise refused from None


def branch_record(run: Run, branch: int) -> dict:
    return run.branches().get(str(branch), {})


def branch_status(rec: dict | None) -> str | None:
    """running | done | failed, or None for a branch with no record yet. Records written before branches had a
    status are finished ones (they carry their best round)."""
    if not rec:
        return None
    return rec.get("status") or ("done" if "best_round_id" in rec else None)


def update_branch(store: Store, run_id: str, branch: int, **fields) -> dict:
    """Merge ``fields`` into one branch's record in the run's branches JSON (a None value removes the key)."""
    with store.session() as s:
        run = s.get(Run, run_id)
        branches = run.branches()
        rec = {k: v for k, v in (branches.get(str(branch), {}) | fields).items() if v is not None}
        branches[str(branch)] = rec
        run.branches_json = json.dumps(branches)
        s.add(run)
        s.commit()
    return rec
