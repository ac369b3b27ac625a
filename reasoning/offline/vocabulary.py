"""From ImageNet labels to sound words: a small, hand-written table, meant to be read and edited.

Each rule names a family of ImageNet classes (by index range for the big animal groups, by exact class
name otherwise) and says what such a source sounds like: ``sources`` for the semantic section, ``hit``
for a visual impact in a shot showing it, ``move`` for sustained motion, ``bed`` for the shot's
ambience; ``hard`` marks crisp rather than soft transients. ``allows`` removes a default negative
(instruments allow music). Labels that match no rule fall back to ``FALLBACK``. Class indices follow
timm's ImageNet-1k order (``timm.data.ImageNetInfo``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

DEFAULT_NEGATIVES = ("speech", "music")


@dataclass(frozen=True)
class SoundRule:
    name: str
    sources: str  # what one hears from this source, for the semantic section
    hit: str  # label of an impact event
    move: str  # label of a continuous event (sustained motion)
    bed: str  # label of the ambience bed
    outdoor: bool = True
    hard: bool = False  # hard, crisp transients (metal, wood, pavement) rather than soft, natural ones
    allows: frozenset[str] = frozenset()  # default negatives this source makes expected
    indices: tuple[range, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)

    def matches(self, index: int, synonyms: Iterable[str]) -> bool:
        if any(index in r for r in self.indices):
            return True
        return any(s.lower() in self.names for s in synonyms)


def _n(text: str) -> frozenset[str]:
    return frozenset(s.strip().lower() for s in text.split(";") if s.strip())


RULES: tuple[SoundRule, ...] = (
    SoundRule("dog", "dog barks and paws on the ground", "dog bark", "dog paws pattering", "yard ambience",
              indices=(range(151, 281),)),  # dog breeds, wolves, foxes
    SoundRule("cat", "cat purrs and soft paw steps", "soft paw thump", "cat paws padding", "quiet room tone",
              outdoor=False, indices=(range(281, 294),)),
    SoundRule("bird", "birdsong and fluttering wings", "wing flap", "wings fluttering", "birdsong in open air",
              indices=(range(7, 25), range(80, 101), range(127, 147))),
    SoundRule("small animal", "small animal rustling through grass", "soft thump on earth", "rustling in grass",
              "meadow ambience with birds and breeze",
              indices=(range(101, 107), range(294, 300), range(330, 339), range(354, 389))),
    SoundRule("hoofed animal", "hooves on packed earth and snorts", "hoof clop", "hooves trotting",
              "open field ambience", indices=(range(339, 354),), names=_n("horse cart; oxcart")),
    SoundRule("insect", "insects buzzing", "tiny click", "insect buzz", "summer field insects",
              indices=(range(69, 80), range(300, 327))),
    SoundRule("water life", "water lapping and splashes", "splash", "water swirling", "water ambience",
              indices=(range(0, 7), range(25, 69), range(107, 127), range(147, 151), range(327, 330),
                       range(389, 398))),
    SoundRule("waterside", "waves and water lapping", "splash", "water lapping", "waves on the shore",
              names=_n("lakeside; seashore; sandbar; coral reef; geyser; fountain; dam; breakwater; pier; dock; "
                       "boathouse; scuba diver; snorkel; rain barrel")),
    SoundRule("boat", "boat engine and water wash", "hull knock", "boat engine chugging", "harbour ambience", hard=True,
              names=_n("canoe; speedboat; gondola; fireboat; liner; schooner; yawl; catamaran; trimaran; "
                       "container ship; lifeboat; paddlewheel; submarine; aircraft carrier; paddle; wreck")),
    SoundRule("rail", "tram rumble and rail squeal", "rail clank", "tram rumble", "city street ambience", hard=True,
              names=_n("streetcar; passenger car; electric locomotive; steam locomotive; freight car; "
                       "bullet train")),
    SoundRule("road vehicle", "car engines passing and tyre hiss", "car door thud", "car passing by",
              "city traffic ambience", hard=True,
              names=_n("cab; limousine; sports car; racer; jeep; minivan; convertible; police van; ambulance; "
                       "pickup; beach wagon; model t; go-kart; golfcart; car wheel; car mirror; grille; "
                       "disk brake; school bus; minibus; trolleybus; moving van; garbage truck; "
                       "trailer truck; fire engine; tow truck; tractor; recreational vehicle; mobile home; "
                       "forklift; snowplow; half track; tank; parking meter; gas pump; traffic light; "
                       "street sign; manhole cover; seat belt")),
    SoundRule("two-wheeler", "bicycle chain whir and freewheel ticking", "wheel bump", "bicycle rolling by",
              "city street ambience",
              names=_n("mountain bike; bicycle-built-for-two; tricycle; unicycle; jinrikisha; moped; "
                       "motor scooter; crash helmet")),
    SoundRule("aircraft", "jet engine roar", "thump", "engine roar passing", "open sky wind",
              names=_n("airliner; warplane; airship; wing; space shuttle; missile; parachute")),
    SoundRule("street", "footsteps on pavement and distant traffic", "footstep", "footsteps",
              "city street ambience", hard=True,
              names=_n("bannister; turnstile; steel arch bridge; suspension bridge; viaduct; triumphal arch; "
                       "obelisk; prison; palace; church; mosque; monastery; cinema; library; restaurant; "
                       "bakery; barbershop; bookshop; butcher shop; confectionery; grocery store; shoe shop; "
                       "tobacco shop; toyshop; stone wall; chainlink fence; picket fence; worm fence; "
                       "park bench; mailbox; pay-phone; cash machine; vending machine; flagpole; pole; "
                       "beacon; tile roof; sliding door; patio; umbrella")),
    SoundRule("people", "footsteps and clothing rustle", "footstep", "cloth rustle and footsteps",
              "room tone with distant activity",
              names=_n("abaya; academic gown; apron; bikini; bow tie; cardigan; cloak; cowboy boot; cowboy hat; "
                       "gown; jean; jersey; kimono; lab coat; loafer; maillot; military uniform; miniskirt; "
                       "overskirt; pajama; poncho; running shoe; sandal; sarong; sock; suit; sweatshirt; "
                       "swimming trunks; trench coat; vestment; windsor tie; bolo tie; wig; groom; clog; "
                       "mitten; backpack; purse; sunglasses; sunglass; hoopskirt")),
    SoundRule("soft", "soft fur and fabric rustle", "soft thump", "soft fur rustle", "quiet ambience",
              names=_n("feather boa; fur coat; wool; velvet; quilt; pillow; teddy; stole; bearskin; "
                       "sleeping bag; bath towel; dishrag; handkerchief")),
    SoundRule("instrument", "an instrument being played", "instrument note", "instrument playing",
              "room tone", outdoor=False, allows=frozenset({"music"}),
              names=_n("accordion; acoustic guitar; banjo; bassoon; cello; chime; cornet; drum; drumstick; "
                       "electric guitar; flute; french horn; gong; grand piano; harmonica; harp; maraca; "
                       "marimba; oboe; ocarina; organ; panpipe; sax; steel drum; trombone; upright; violin")),
    SoundRule("stage", "amplified voice and music", "microphone thump", "crowd murmur", "hall reverb",
              outdoor=False, allows=frozenset({"speech", "music"}),
              names=_n("microphone; stage; loudspeaker; theater curtain; home theater")),
    SoundRule("sport", "ball bounces and squeaking shoes", "ball bounce", "quick footsteps", "gym hall reverb",
              outdoor=False, hard=True,
              names=_n("balance beam; barbell; baseball; basketball; croquet ball; dumbbell; football helmet; "
                       "golf ball; horizontal bar; parallel bars; ping-pong ball; puck; punching bag; racket; "
                       "rugby ball; ski; soccer ball; tennis ball; volleyball; scoreboard; bobsled; dogsled; "
                       "snowmobile; knee pad; ballplayer; swing")),
    SoundRule("kitchen", "ceramic and metal clatter, sizzling pans", "ceramic clink", "utensils clattering",
              "kitchen room tone", outdoor=False, indices=(range(923, 970),), hard=True,
              names=_n("caldron; cleaver; cocktail shaker; coffee mug; coffeepot; crock pot; dishwasher; "
                       "dutch oven; espresso maker; frying pan; ladle; measuring cup; microwave; mixing bowl; "
                       "pitcher; plate rack; pot; refrigerator; rotisserie; saltshaker; soup bowl; spatula; "
                       "stove; strainer; teapot; toaster; tray; waffle iron; water jug; wok; wooden spoon; "
                       "can opener; corkscrew; beer bottle; beer glass; wine bottle; goblet; pop bottle; "
                       "water bottle; whiskey jug; milk can; soap dispenser; washbasin; bathtub; tub")),
    SoundRule("tools", "tool knocks on wood and metal", "hammer knock", "tool scraping", "workshop room tone",
              outdoor=False, hard=True,
              names=_n("hammer; hatchet; chain saw; power drill; plane; screwdriver; screw; nail; file; shovel; "
                       "pick; plow; lawn mower; carpenter's kit; lumbermill; harvester; thresher; crane; chain; "
                       "barrow; broom; bucket; barrel; crate; padlock; combination lock; hook; reel; tripod")),
    SoundRule("fire", "fire crackling", "crackle pop", "flames roaring", "fire crackling",
              names=_n("candle; torch; matchstick; lighter; volcano; jack-o'-lantern; fire screen; "
                       "space heater")),
    SoundRule("nature", "wind through grass and leaves, distant birds", "soft thud on grass", "grass rustling",
              "meadow ambience with birds and breeze", indices=(range(970, 998),),
              names=_n("hay; thatch; spider web; megalith; greenhouse; birdhouse; apiary; honeycomb; "
                       "mountain tent; yurt; cliff dwelling")),
    SoundRule("office", "button clicks and electronic hum", "click", "keyboard tapping", "quiet office room tone",
              outdoor=False, hard=True,
              names=_n("switch; photocopier; modem; computer keyboard; typewriter keyboard; desktop computer; "
                       "laptop; mouse; monitor; printer; screen; television; hand-held computer; "
                       "cellular telephone; dial telephone; remote control; ipod; hard disc; cd player; "
                       "cassette player; tape player; radio; projector; oscilloscope; space bar; joystick; "
                       "electric fan; analog clock; wall clock; digital clock; stopwatch; notebook; binder; "
                       "desk; hourglass; vacuum; washer; sewing machine; slot; web site")),
    SoundRule("firearm", "gunshots and metal clicks", "gunshot", "metal rattle", "tense outdoor air", hard=True,
              names=_n("assault rifle; revolver; rifle; cannon; holster")),
)

FALLBACK = SoundRule("scene", "soft movement and light handling sounds", "thud", "movement rustle",
                     "quiet room tone")

# "When in doubt, understate": with weak or inconsistent labels the watcher names no specific source and plans
# sounds that cannot be wrong in kind, chosen only from a coarse cue (open sky or vegetation = outdoors). Without
# that cue the bed is neutral air, not "indoor": a street of grey buildings shows neither sky nor green.
GENERIC_INDOOR = SoundRule("generic indoor", "soft movement and light handling sounds", "soft thud",
                           "soft rustle of movement", "faint quiet air ambience", outdoor=False)
GENERIC_OUTDOOR = SoundRule("generic outdoor", "soft movement in open air", "soft thud",
                            "soft rustle of movement", "light breeze outdoors")
GENERIC = (GENERIC_INDOOR, GENERIC_OUTDOOR)

_BY_NAME = {r.name: r for r in RULES + GENERIC}


def rule(name: str) -> SoundRule:
    return FALLBACK if name == FALLBACK.name else _BY_NAME[name]


def match(index: int, synonyms: Iterable[str]) -> SoundRule:
    """The first rule that covers this ImageNet class, or ``FALLBACK``."""
    syn = tuple(synonyms)
    return next((r for r in RULES if r.matches(index, syn)), FALLBACK)


def rank(labels: Iterable[tuple[int, Iterable[str], float]]) -> list[tuple[SoundRule, float]]:
    """Rules ordered by the probability mass of the labels they cover (label = (index, synonyms, prob))."""
    mass: dict[str, float] = {}
    for index, synonyms, prob in labels:
        r = match(index, synonyms)
        mass[r.name] = mass.get(r.name, 0.0) + float(prob)
    return sorted(((rule(n), m) for n, m in mass.items()), key=lambda x: (-x[1], x[0].name))


def negatives(rules: Iterable[SoundRule]) -> list[str]:
    """Default negatives minus what the given sources make expected."""
    allowed: set[str] = set()
    for r in rules:
        allowed |= r.allows
    return [n for n in DEFAULT_NEGATIVES if n not in allowed]
