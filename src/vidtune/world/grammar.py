"""ShapeWorld prompt grammar: structured scenes <-> captions (generate, render to text, parse back).

Instruction caption (full control)::

    [count] [size] colour shape[s] motion [, then motion] [, camera pans dir]
    e.g. "two small red circles move right, then fall, camera pans left"
         "blue particles pour"

Loose caption (pretraining), as people caption: "a red circle" for one object, "red circles" for two or three,
and, with some probability, the first motion verb (or the whole sequence) and a camera pan ("a red circle falls,
camera pans left").
``parse(caption)`` inverts both styles; fields a loose caption does not state are ``None`` (the count of "red
circles" too). An instruction caption always starts with a count word (one, two, three) and states the camera; a
loose one starts with "a" or a colour and leaves the camera open unless it names a pan; a pour caption has no loose
form.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from vidtune.errors import VidtuneError

COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
MOTIONS = ("left", "right", "up", "down", "still", "fall", "bounce")
DIRECTIONAL_MOTIONS = ("left", "right", "up", "down", "fall")  # a displacement along a direction
CAMERAS = ("static", "left", "right", "up", "down")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
WORD_COUNTS = {v: k for k, v in COUNT_WORDS.items()} | {"a": 1, "an": 1}

# verb phrases, singular / plural subject
_MOTION_PHRASE = {
    "left": ("moves left", "move left"),
    "right": ("moves right", "move right"),
    "up": ("moves up", "move up"),
    "down": ("moves down", "move down"),
    "still": ("stays still", "stay still"),
    "fall": ("falls", "fall"),
    "bounce": ("bounces", "bounce"),
}
_PHRASE_MOTION = {p: m for m, pair in _MOTION_PHRASE.items() for p in pair}

# Attribute compositions never seen in training (one colour per shape); evaluation's held-out split.
HELDOUT_COMPOSITIONS = frozenset({("red", "triangle"), ("green", "circle"), ("blue", "square")})


@dataclass(frozen=True)
class Scene:
    """A parsed prompt. ``None`` marks an attribute the caption leaves open (loose captions)."""

    colour: str
    shape: str | None = None  # None for a particle pour
    size: str | None = "small"
    count: int | None = 1
    motions: tuple[str, ...] | None = ("still",)
    camera: str | None = "static"
    pour: bool = False
    # a loose caption's scene ("a red circle", "red circles fall, camera pans left"): no count word one/two/three,
    # so the exact count and size, and the camera unless a pan is named, stay open (None)
    loose: bool = False

    @property
    def pans(self) -> bool:
        """The camera moves (a stated pan)."""
        return self.camera not in (None, "static")

    @property
    def is_heldout(self) -> bool:
        return (self.colour, self.shape) in HELDOUT_COMPOSITIONS

    @property
    def categories(self) -> tuple[str, ...]:
        """Slice labels used by evaluation (camera, physics, count, colour, ordering)."""
        cats = ["colour"]
        if self.pans:
            cats.append("camera")
        if self.pour or (self.motions and any(m in ("fall", "bounce") for m in self.motions)):
            cats.append("physics")
        if self.count and self.count > 1:
            cats.append("count")
        if self.motions and len(self.motions) > 1:
            cats.append("ordering")
        return tuple(cats)


def segment_transitions(n_segments: int, frames: int) -> list[range]:
    """Transitions 0 … frames−2 split into consecutive near-equal segments, one per motion of a sequence."""
    edges = [round(i * (frames - 1) / n_segments) for i in range(n_segments + 1)]
    return [range(edges[i], edges[i + 1]) for i in range(n_segments)]


def caption(scene: Scene) -> str:
    """Render a scene as text. Open attributes (None) are omitted, which yields a loose caption."""
    if scene.pour:
        text = f"{scene.colour} particles pour"
    else:
        if scene.loose and scene.count is None:  # loose, several objects: "red circles"
            plural, words = True, []
        else:
            n = scene.count or 1
            plural = n > 1
            words = ["a" if scene.loose and not plural else COUNT_WORDS[n]]
        if scene.size is not None:
            words.append(scene.size)
        words += [scene.colour, scene.shape + ("s" if plural else "")]
        text = " ".join(words)
        if scene.motions:
            phrases = [_MOTION_PHRASE[m][1 if plural else 0] for m in scene.motions]
            text += " " + ", then ".join(phrases)
    if scene.pans:
        text += f", camera pans {scene.camera}"
    return text


def loose(scene: Scene, with_motion: bool, with_camera: bool = False, with_order: bool = False) -> Scene:
    """The loose-caption view of a full scene: colour and shape, one object or several ("a red circle" /
    "red circles", as people caption), optionally the first motion (``with_order``: the whole sequence, "moves left,
    then falls") and (``with_camera``) a camera pan; the exact count and size stay open, and so does the camera when
    it is static or not named."""
    if scene.pour:  # a pour caption names no count/size/motion to drop; keep it whole
        return scene
    motions = scene.motions[: None if with_order else 1] if (with_motion and scene.motions) else None
    camera = scene.camera if with_camera and scene.pans else None
    return replace(scene, size=None, count=1 if scene.count == 1 else None, motions=motions, camera=camera,
                   loose=True)


def vocabulary() -> list[str]:
    """Every word the grammar can produce (the tiny text encoder's vocabulary)."""
    words = {"a", "an", "then", "camera", "pans", "particles", "pour", ","}
    words |= set(COLOURS) | set(SIZES) | set(COUNT_WORDS.values())
    words |= set(SHAPES) | {s + "s" for s in SHAPES}
    for pair in _MOTION_PHRASE.values():
        for p in pair:
            words |= set(p.split())
    words |= {c for c in CAMERAS if c != "static"}
    return sorted(words)


def tokenize(text: str) -> list[str]:
    """Lower-case words with commas as separate tokens."""
    return text.lower().replace(",", " , ").split()


def check_words(text: str) -> None:
    """Raise a clear error naming every word outside the world's vocabulary."""
    vocab = set(vocabulary())
    unknown = [w for w in tokenize(text) if w not in vocab]
    if unknown:
        import difflib

        hints = []
        for w in unknown:
            close = difflib.get_close_matches(w, sorted(vocab), n=1)
            hints.append(f"'{w}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise VidtuneError(f"unknown word(s) in prompt {text!r}: {', '.join(hints)}")


def parse(text: str) -> Scene:
    """Parse an instruction or loose caption back into a :class:`Scene` (inverse of :func:`caption`)."""
    check_words(text)
    clauses = [c.strip() for c in text.lower().split(",") if c.strip()]
    camera: str | None = None
    if clauses and clauses[-1].startswith("camera pans"):
        camera = clauses.pop()[len("camera pans") :].strip()
        if camera not in CAMERAS:
            raise VidtuneError(f"cannot parse camera direction {camera!r} in prompt {text!r}")
    if not clauses:
        raise VidtuneError(f"prompt {text!r} names no object")
    words = clauses[0].split()
    if len(words) >= 3 and words[1:3] == ["particles", "pour"] and words[0] in COLOURS and len(clauses) == 1:
        return Scene(colour=words[0], shape=None, size=None, count=None, motions=None, camera=camera or "static",
                     pour=True)
    several = bool(words) and words[0] in COLOURS  # loose plural: "red circles fall" (two or three)
    if not words or not (several or words[0] in WORD_COUNTS):
        raise VidtuneError(f"prompt {text!r} must start with a count word (a, one, two, three), a colour "
                           "followed by a plural shape, or a colour pour")
    count = 2 if several else WORD_COUNTS[words[0]]
    explicit_count = not several and words[0] not in ("a", "an")
    i = 0 if several else 1
    size = None
    if i < len(words) and words[i] in SIZES:
        size, i = words[i], i + 1
    if i >= len(words) or words[i] not in COLOURS:
        raise VidtuneError(f"prompt {text!r}: expected a colour after the count/size")
    colour, i = words[i], i + 1
    if i >= len(words):
        raise VidtuneError(f"prompt {text!r}: expected a shape after the colour")
    noun = words[i]
    shape = noun[:-1] if noun.endswith("s") and noun[:-1] in SHAPES else noun
    if shape not in SHAPES:
        raise VidtuneError(f"prompt {text!r}: unknown shape {noun!r}")
    if (noun != shape) != (count > 1):
        raise VidtuneError(f"prompt {text!r}: count {count} does not agree with {noun!r}")
    phrases = [" ".join(words[i + 1 :])] if len(words) > i + 1 else []
    for clause in clauses[1:]:
        if not clause.startswith("then "):
            raise VidtuneError(f"prompt {text!r}: cannot parse clause {clause!r} (expected 'then ...')")
        phrases.append(clause[len("then ") :])
    motions = []
    for p in phrases:
        if p not in _PHRASE_MOTION:
            raise VidtuneError(f"prompt {text!r}: unknown motion {p!r}")
        motions.append(_PHRASE_MOTION[p])
    return Scene(
        colour=colour,
        shape=shape,
        size=size,
        count=None if several else count,
        motions=tuple(motions) if motions else None,
        # instruction captions (explicit count) state the camera whenever it moves; loose ones leave it open
        camera=camera or ("static" if explicit_count else None),
        loose=not explicit_count,
    )


def random_scene(rng: random.Random, *, max_count: int = 3, p_then: float = 0.25, p_camera: float = 0.25,
                 p_pour: float = 0.05, heldout: bool | None = False) -> Scene:
    """Draw a full scene. ``heldout=False`` excludes held-out compositions, ``True`` draws only them, ``None`` any."""
    camera = rng.choice(CAMERAS[1:]) if rng.random() < p_camera else "static"
    if heldout is not True and rng.random() < p_pour:
        return Scene(colour=rng.choice(COLOURS), shape=None, size=None, count=None, motions=None,
                     camera=camera, pour=True)
    while True:
        colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
        if heldout is None or ((colour, shape) in HELDOUT_COMPOSITIONS) == heldout:
            break
    first = rng.choice(MOTIONS)
    motions: tuple[str, ...] = (first,)
    if rng.random() < p_then and first != "bounce":
        # a sequence must be visible: the second segment differs from the first; a bounce needs the whole clip
        motions = (first, rng.choice([m for m in MOTIONS if m != first and m != "bounce"]))
    return Scene(colour=colour, shape=shape, size=rng.choice(SIZES), count=rng.randint(1, max_count),
                 motions=motions, camera=camera)
