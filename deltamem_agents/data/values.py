"""Open value sets for generated conversations, split so that no dev or test value is ever trained on.

A memory must carry what *this* conversation said. When every value comes from a list of a few
dozen, an adapter can score by picking among the values it saw in training, a classifier over the
vocabulary, not a memory. So the values here come from large open sets: the given names,
surnames and places of Faker's ~100 locales (tens of thousands each), its occupations, dishes,
made-up words, code words, numbers, dates and clock times.

Each value belongs to exactly one split, decided by a hash of its words, and a dev or test value
is dropped when any of its words is a word of some training value or of the closed lists in
`vocab` (which trained earlier adapters): a held-out answer is never a word the adapter has been
taught to say. Words that only give a value its shape (month names, "am") are shared by all
splits. The pools depend only on the Faker version (recorded in split manifests).
"""

from __future__ import annotations

import hashlib
import importlib
import random
import re
from collections.abc import Iterable
from functools import cache
from typing import Literal

import deltamem_agents.data.vocab as vocab
from deltamem_agents.data.templates import template_text

SplitName = Literal["train", "dev", "test"]
ValueKind = Literal[
    "given_name", "surname", "city", "occupation", "food", "made_up_word", "code_word", "number", "date", "time"
]
VALUE_KINDS: tuple[ValueKind, ...] = (
    "given_name", "surname", "city", "occupation", "food", "made_up_word", "code_word", "number", "date", "time",
)
#: out of 100 hash buckets: train 0-79, dev 80-89, test 90-99
_BUCKETS: dict[SplitName, range] = {"train": range(0, 80), "dev": range(80, 90), "test": range(90, 100)}
#: words that shape a value rather than carry it (shared by every split)
SHAPE_WORDS = frozenset(w.lower() for w in (*vocab.MONTHS, *vocab.WEEKDAYS, "am", "pm", "of", "and", "with", "de", "la"))
#: kinds compared by value only: their words are small numbers and shape words that every split shares
_VALUE_LEVEL_KINDS = frozenset({"number", "date", "time"})
_NAME = re.compile(r"^[A-Z][a-z]{2,11}$")
_PHRASE = re.compile(r"^[a-z]+( [a-z]+)?$")

# dishes and ingredients people name as favourites; split like every other value
_FOODS = (
    "goulash", "borscht", "pierogi", "moussaka", "baklava", "tiramisu", "risotto", "gnocchi", "ravioli", "tortellini",
    "bruschetta", "focaccia", "polenta", "ceviche", "empanadas", "churros", "quesadillas", "enchiladas", "tamales",
    "burritos", "nachos", "guacamole", "hummus", "tabbouleh", "shawarma", "kebab", "couscous", "tagine", "biryani",
    "samosas", "pakoras", "dosa", "idli", "naan", "tandoori", "vindaloo", "korma", "bibimbap", "bulgogi", "kimchi",
    "tempura", "udon", "soba", "gyoza", "teriyaki", "yakitori", "onigiri", "okonomiyaki", "takoyaki", "laksa",
    "rendang", "satay", "pad thai", "tom yum", "banh mi", "spring rolls", "wontons", "dim sum", "chow mein",
    "mapo tofu", "peking duck", "congee", "jambalaya", "gumbo", "cornbread", "brisket", "meatloaf", "pancakes",
    "waffles", "crepes", "croissants", "quiche", "ratatouille", "bouillabaisse", "cassoulet", "fondue", "raclette",
    "schnitzel", "pretzels", "strudel", "sauerkraut", "bratwurst", "paprikash", "haggis", "shortbread", "scones",
    "crumpets", "porridge", "kedgeree", "falafel wraps", "lentil soup", "minestrone", "gazpacho", "paella valenciana",
    "tortilla", "croquetas", "patatas bravas", "feijoada", "moqueca", "arepas", "pupusas", "poutine", "bagels",
    "pastrami", "cheesecake", "brownies", "muffins", "cinnamon rolls", "apple pie", "pumpkin pie", "lemon tart",
    "macarons", "eclairs", "profiteroles", "souvlaki", "spanakopita", "dolmades", "halloumi", "shakshuka",
    "injera", "jollof rice", "bobotie", "piri piri chicken", "pho bo", "nasi goreng", "adobo", "lumpia", "sinigang",
    "poke", "mochi", "halva", "kulfi", "gelato", "sorbet", "risotto nero", "carbonara", "lasagne verdi", "cannoli",
)
_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kl", "l", "m", "n", "p", "pl", "qu", "r", "s", "st", "t", "tr",
           "v", "z", "th", "sh", "ch", "j", "h", "w", "y", "sk")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "ia", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "x", "th", "k")


def split_of(value: str) -> SplitName:
    """The split a value belongs to: a stable hash of its last word (lower case).

    Hashing the last word keeps phrases that share their head ("network engineer", "civil
    engineer") in one split, so fewer held-out phrases are dropped for sharing a word with training."""
    words = _words(value)
    return _bucket_split(words[-1] if words else value.lower())


def _bucket_split(key: str) -> SplitName:
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return next(name for name, span in _BUCKETS.items() if bucket in span)


def _words(value: str) -> list[str]:
    return re.findall(r"[a-z0-9:]+", value.lower())


def _values(table: object) -> Iterable[str]:
    """The strings of a Faker word table (a tuple, or a dict of weights); anything else holds none."""
    if isinstance(table, dict):
        return [v for v in table if isinstance(v, str)]
    if isinstance(table, (tuple, list, set, frozenset)):
        return [v for v in table if isinstance(v, str)]
    return []


def _faker_lists() -> dict[str, set[str]]:
    """Given names, surnames, cities and English occupations from every Faker locale (Latin script only)."""
    from faker.config import AVAILABLE_LOCALES

    found: dict[str, set[str]] = {"given_name": set(), "surname": set(), "city": set(), "occupation": set()}
    for locale in AVAILABLE_LOCALES:
        for module, attributes, kind, pattern in (
            ("person", ("first_names", "first_names_male", "first_names_female"), "given_name", _NAME),
            ("person", ("last_names",), "surname", _NAME),
            ("address", ("cities", "city_names"), "city", _NAME),
        ):
            try:
                provider = importlib.import_module(f"faker.providers.{module}.{locale}").Provider
            except (ImportError, AttributeError):
                continue
            for attribute in attributes:
                found[kind].update(v for v in _values(getattr(provider, attribute, ())) if pattern.match(v))
        if locale.startswith("en"):
            try:
                provider = importlib.import_module(f"faker.providers.job.{locale}").Provider
            except (ImportError, AttributeError):
                continue
            found["occupation"].update(v.lower() for v in provider.jobs if _PHRASE.match(v.lower()))
    return found


def _made_up_words(count: int) -> set[str]:
    """Pronounceable words of two or three syllables that name nothing (seeded, the same everywhere)."""
    rng = random.Random("deltamem-made-up-words")
    words: set[str] = set()
    while len(words) < count:
        syllables = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS) for _ in range(syllables))
        if 5 <= len(word) <= 10:
            words.add(word.capitalize())
    return words


def _code_words(count: int) -> set[str]:
    """Codes such as "QX473": two capitals and three digits, one token-run that no other value shares."""
    rng = random.Random("deltamem-code-words")
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    codes: set[str] = set()
    while len(codes) < count:
        codes.add(rng.choice(letters) + rng.choice(letters) + str(rng.randrange(100, 1000)))
    return codes


def _raw_pools() -> dict[ValueKind, set[str]]:
    faker_lists = _faker_lists()
    people = faker_lists["given_name"] | faker_lists["surname"]
    return {
        "given_name": faker_lists["given_name"],
        "surname": faker_lists["surname"] - faker_lists["given_name"],
        "city": faker_lists["city"] - people,
        "occupation": faker_lists["occupation"],
        "food": set(_FOODS),
        "made_up_word": _made_up_words(20000) - people - faker_lists["city"],
        "code_word": _code_words(20000),
        "number": {str(n) for n in range(100, 10000)},
        "date": {f"{month} {day}" for month in vocab.MONTHS for day in range(1, 29)},
        "time": {f"{hour}:{minute:02d}" for hour in range(1, 13) for minute in range(0, 60, 5)},
    }


def _date_split(value: str) -> SplitName:
    """Dates go by the whole value: "June 8" and "June 9" may fall in different splits."""
    return _bucket_split(value.lower())


def _closed_words() -> set[str]:
    """Every word training text holds besides its open values: the closed lists that earlier
    adapters were trained on, and the templates and small talk every conversation is built from."""
    values = [v for slot in (*vocab.FACTS, *vocab.PREFERENCES, *vocab.INSTRUCTIONS, *vocab.TASKS) for v in slot.values]
    words = {w for v in (*values, *vocab.CITIES, *vocab.NAMES, *vocab.PET_NAMES) for w in _words(v)}
    return (words | set(_words(template_text()))) - SHAPE_WORDS


@cache
def _pools() -> dict[ValueKind, dict[SplitName, tuple[str, ...]]]:
    raw = _raw_pools()
    by_split: dict[ValueKind, dict[SplitName, list[str]]] = {
        kind: {"train": [], "dev": [], "test": []} for kind in VALUE_KINDS
    }
    for kind, values in raw.items():
        for value in sorted(values):
            split = _date_split(value) if kind == "date" else split_of(value)
            by_split[kind][split].append(value)
    trained = _closed_words() | {
        w for kind in VALUE_KINDS if kind not in _VALUE_LEVEL_KINDS for v in by_split[kind]["train"] for w in _words(v)
    }
    trained -= SHAPE_WORDS
    pools: dict[ValueKind, dict[SplitName, tuple[str, ...]]] = {}
    for kind in VALUE_KINDS:
        pools[kind] = {"train": tuple(by_split[kind]["train"])}
        for split in ("dev", "test"):
            kept = [v for v in by_split[kind][split] if kind in _VALUE_LEVEL_KINDS or not trained.intersection(_words(v))]
            pools[kind][split] = tuple(kept)  # type: ignore[index]
    return pools


def value_pool(kind: ValueKind, split: SplitName) -> tuple[str, ...]:
    """The sorted values of one kind that conversations of ``split`` draw from."""
    if kind not in VALUE_KINDS:
        raise ValueError(f"unknown value kind {kind!r}; use one of {', '.join(VALUE_KINDS)}")
    if split not in _BUCKETS:
        raise ValueError(f"unknown split {split!r}; use train, dev or test")
    return _pools()[kind][split]


def pool_sizes() -> dict[str, dict[str, int]]:
    """How many values each kind holds per split (what a manifest records)."""
    return {kind: {split: len(values) for split, values in pools.items()} for kind, pools in _pools().items()}


def trained_words() -> frozenset[str]:
    """Every word a training value (or a closed-list value) contains, shape words left out."""
    words = _closed_words() | {
        w for kind in VALUE_KINDS if kind not in _VALUE_LEVEL_KINDS for v in value_pool(kind, "train") for w in _words(v)
    }
    return frozenset(words - SHAPE_WORDS)


def value_words(value: str) -> list[str]:
    """The words a value is compared by (lower case; shape words kept)."""
    return _words(value)


def faker_version() -> str:
    import faker

    return str(faker.VERSION)
