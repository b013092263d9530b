"""A seeded synthetic world: the facts every template question is asked about.

Why synthetic: a question about a real film can be answered from a model's memory, so the tools
would teach nothing; invented entities can only be looked up. Why seeded and self-contained: the
same seed must give the same bytes on every machine, so only `random.Random(seed)` is drawn from,
in a fixed order, and nothing depends on set order or `hash()`.

Every name in a world is unique and *substring-free*: no name occurs inside another name, nor
inside the fixed text of questions, tool documents and tool code (`forbidden`). The reward's
matching rule is substring-based, so this is what keeps a lookup's error message, a distractor
row or a question from ever "containing" an answer by accident.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass

Value = str | int

# How many entities of each kind a world holds. Enough that 2,000 environments rarely repeat a
# question, few enough that building a world stays well under a second.
SIZES = {
    "country": 24,
    "city": 110,
    "person": 420,
    "university": 36,
    "company": 100,
    "film": 110,
    "book": 110,
    "album": 80,
    "song": 110,
    "product": 90,
    "event": 80,
    "team": 48,
    "landmark": 64,
    "mountain": 48,
    "river": 48,
}

_ONSETS = tuple("b c d f g h k l m n p r s t v z b d k l m n r s t v".split()) + (
    "br",
    "dr",
    "kr",
    "st",
    "tr",
    "th",
)
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ou")
_CODAS = ("", "", "", "", "", "n", "r", "l", "s", "m", "nd", "rk")

_ADJECTIVES = (
    "Silent Amber Broken Crimson Distant Electric Fading Golden Hollow Hidden Iron Jade Last Lunar "
    "Midnight Northern Painted Quiet Restless Scarlet Shattered Silver Sleeping Southern Stolen Sunken "
    "Velvet Wandering Winter Wild Burning Copper Frozen Glass Gentle Heavy Invisible Lonely Marble "
    "Paper Patient Salt Secret Small Stone Tidal Twin Violet Wooden Bitter Bright Careless Endless"
).split()
_NOUNS = (
    "Harbor Orchard Meridian Lantern Horizon Compass Garden Cathedral Mirror River Archive Lighthouse "
    "Ember Kingdom Frontier Monsoon Atlas Canyon Carnival Citadel Comet Delta Echo Falcon Glacier "
    "Labyrinth Meadow Monument Observatory Orbit Pilgrim Prairie Quarry Rampart Reef Saddle Sextant "
    "Signal Summit Tapestry Tempest Thicket Tundra Valley Voyage Wharf Willow Zenith Beacon Bridge "
    "Caravan Cipher Dune Fjord Grove Hearth"
).split()

_OCCUPATIONS = (
    "botanist cartographer glassblower violinist surgeon geologist chemist sculptor novelist pilot "
    "jeweller beekeeper astronomer pharmacist carpenter economist linguist oceanographer photographer "
    "veterinarian watchmaker translator archivist choreographer locksmith"
).split()
_INDUSTRIES = (
    "shipbuilding textiles robotics aerospace brewing pharmaceuticals mining telecommunications "
    "forestry cosmetics logistics agriculture fisheries semiconductors"
).split()
_COMPANY_SUFFIXES = ("Dynamics", "Works", "Holdings", "Industries", "Labs", "Group", "Systems", "Foundry")
_PRODUCT_NOUNS = ("Kettle", "Lamp", "Drone", "Headset", "Blender", "Scooter", "Camera", "Tablet", "Heater")
_EVENT_NOUNS = ("Film Festival", "Summit", "Book Fair", "Jazz Festival", "Expo", "Marathon", "Congress")
_TEAM_NOUNS = ("Rovers", "United", "Falcons", "Wolves", "Mariners", "Comets", "Giants", "Harriers")
_LANDMARK_NOUNS = ("Tower", "Bridge", "Cathedral", "Arena", "Library", "Observatory", "Gate", "Palace")
_CURRENCY_NOUNS = ("crown", "mark", "florin", "taler", "ducat", "shilling")
_LANGUAGE_ENDINGS = ("ish", "ese", "ian", "ic", "i")
_CITY_ENDINGS = ("", "", "", "burg", "ford", "ville", "haven", "mouth", "dale", "port")
_COUNTRY_ENDINGS = ("ia", "land", "stan", "ora", "enia")


@dataclass(frozen=True)
class Entity:
    """One thing in the world. `attrs` values are names of other entities, ints, or text."""

    kind: str
    name: str
    attrs: dict[str, Value]


class NameBook:
    """Hands out names that are unique and substring-free, against each other and `forbidden`."""

    def __init__(self, rng: random.Random, forbidden: str) -> None:
        self._rng = rng
        self._forbidden = forbidden.lower()
        self._taken: set[str] = set()
        self._joined = ""

    def claim(self, make: Callable[[], str], attempts: int = 200) -> str:
        for _ in range(attempts):
            name = make()
            if self.free(name):
                self.take(name)
                return name
        raise RuntimeError(f"could not find a free name after {attempts} attempts (last {name!r})")

    def free(self, name: str) -> bool:
        low = name.lower()
        if low in self._forbidden or low in self._joined:
            return False
        return not any(low[i:j] in self._taken for i in range(len(low)) for j in range(i + 1, len(low) + 1))

    def take(self, name: str) -> None:
        low = name.lower()
        self._taken.add(low)
        self._joined += "\x00" + low

    def root(self, syllables: int) -> str:
        rng = self._rng
        parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)]
        return "".join(parts).capitalize()

    def word(self, minimum: int = 6) -> str:
        """A pronounceable invented word of at least `minimum` letters."""
        while True:
            word = self.root(self._rng.choice((2, 2, 2, 3)))
            if len(word) >= minimum:
                return word


class World:
    """Entities of every kind, generated from `seed`; `forbidden` is text no name may occur in."""

    def __init__(self, seed: int, forbidden: str = "") -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self._names = NameBook(self._rng, forbidden)
        self.entities: dict[str, list[Entity]] = {}
        self.by_name: dict[str, Entity] = {}
        self.currency_rates: dict[str, float] = {}
        self._build()

    # ---- public lookups

    def get(self, kind: str, name: str) -> Entity:
        entity = self.by_name.get(name)
        if entity is None or entity.kind != kind:
            raise KeyError(f"no {kind} named {name!r} in the world of seed {self.seed}")
        return entity

    def of_kind(self, kind: str) -> list[Entity]:
        return self.entities[kind]

    # ---- generation (the order of draws is part of the output: do not reorder)

    def _build(self) -> None:
        rng, names = self._rng, self._names
        continents = [names.claim(lambda: names.word(6) + "a") for _ in range(6)]
        occupations = [o for o in _OCCUPATIONS if names.free(o)]
        industries = [i for i in _INDUSTRIES if names.free(i)]
        for value in occupations + industries:
            names.take(value)

        countries = []
        for _ in range(SIZES["country"]):
            name = names.claim(lambda: names.word(5) + rng.choice(_COUNTRY_ENDINGS))
            currency = names.claim(lambda: names.word(5) + " " + rng.choice(_CURRENCY_NOUNS))
            language = names.claim(lambda: names.word(5) + rng.choice(_LANGUAGE_ENDINGS))
            self.currency_rates[currency] = round(rng.uniform(0.2, 400.0), 4)
            attrs: dict[str, Value] = {
                "currency": currency,
                "official_language": language,
                "continent": rng.choice(continents),
                "population": rng.randint(800_000, 190_000_000),
                "area_km2": rng.randint(12_000, 2_900_000),
                "vat_percent": rng.randint(12, 27),
            }
            countries.append(self._add("country", name, attrs))

        cities = []
        for index in range(SIZES["city"]):
            country = countries[index] if index < len(countries) else rng.choice(countries)
            name = names.claim(lambda: names.word(6) + rng.choice(_CITY_ENDINGS))
            attrs = {
                "country": country.name,
                "population": rng.randint(20_000, 4_900_000),
                "founded_year": rng.randint(900, 1950),
                "area_km2": rng.randint(20, 1500),
                "elevation_m": rng.randint(10, 2500),
            }
            cities.append(self._add("city", name, attrs))
        for country, capital in zip(countries, cities, strict=False):
            country.attrs["capital"] = capital.name

        people = []
        for _ in range(SIZES["person"]):
            name = names.claim(lambda: names.word(4) + " " + names.word(5))
            city = rng.choice(cities)
            attrs = {
                "birth_city": city.name,
                "birth_year": rng.randint(1900, 2000),
                "occupation": rng.choice(occupations),
                "height_cm": rng.randint(150, 200),
                "nationality": city.attrs["country"],
            }
            people.append(self._add("person", name, attrs))
        order = list(people)
        rng.shuffle(order)
        for first, second in zip(order[::2], order[1::2], strict=True):
            first.attrs["spouse"], second.attrs["spouse"] = second.name, first.name

        def born_between(low: int, high: int) -> Entity:
            """A person born in [low, high]: creators are adults when they create."""
            candidates = [p for p in people if low <= int(p.attrs["birth_year"]) <= high]
            return rng.choice(candidates)

        for country in countries:
            country.attrs["head_of_state"] = born_between(1930, 1985).name
        for city in cities:
            city.attrs["mayor"] = born_between(1940, 1990).name

        for _ in range(SIZES["university"]):
            name = names.claim(lambda: "University of " + names.word(6))
            attrs = {
                "city": rng.choice(cities).name,
                "founded_year": rng.randint(1200, 1990),
                "students": rng.randint(1_000, 60_000),
                "rector": born_between(1935, 1980).name,
            }
            self._add("university", name, attrs)

        companies = []
        for _ in range(SIZES["company"]):
            name = names.claim(lambda: names.word(5) + " " + rng.choice(_COMPANY_SUFFIXES))
            founded = rng.randint(1930, 2015)
            attrs = {
                "founder": born_between(founded - 70, founded - 22).name,
                "headquarters": rng.choice(cities).name,
                "founded_year": founded,
                "ceo": born_between(1940, 1992).name,
                "employees": rng.randint(40, 240_000),
                "industry": rng.choice(industries),
            }
            companies.append(self._add("company", name, attrs))
        universities = self.entities["university"]
        for person in people:
            person.attrs["employer"] = rng.choice(companies).name
            person.attrs["alma_mater"] = rng.choice(universities).name

        def title() -> str:
            adjective, noun = rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
            other = rng.choice([n for n in _NOUNS if n != noun])
            return rng.choice((f"The {adjective} {noun}", f"{adjective} {noun}", f"{noun} and {other}"))

        def work(
            kind: str, creator: str, year_attr: str, low: int, high: int, extra: Callable[[], dict]
        ) -> None:
            for _ in range(SIZES[kind]):
                year = rng.randint(low, high)
                attrs = {creator: born_between(year - 75, year - 22).name, year_attr: year, **extra()}
                self._add(kind, names.claim(title), attrs)

        work(
            "film",
            "director",
            "release_year",
            1950,
            2024,
            lambda: {
                "studio": rng.choice(companies).name,
                "runtime_minutes": rng.randint(80, 210),
                "lead_actor": rng.choice(people).name,
                "filming_city": rng.choice(cities).name,
            },
        )
        languages = [str(c.attrs["official_language"]) for c in countries]
        work(
            "book",
            "author",
            "publication_year",
            1950,
            2024,
            lambda: {
                "publisher": rng.choice(companies).name,
                "pages": rng.randint(90, 1200),
                "language": rng.choice(languages),
            },
        )
        work(
            "album",
            "artist",
            "release_year",
            1960,
            2024,
            lambda: {"record_label": rng.choice(companies).name, "tracks": rng.randint(10, 24)},
        )
        albums = self.entities["album"]
        for _ in range(SIZES["song"]):
            album = rng.choice(albums)
            year = int(album.attrs["release_year"])
            attrs = {
                "songwriter": born_between(year - 70, year - 18).name,
                "album": album.name,
                "length_seconds": rng.randint(120, 420),
            }
            self._add("song", names.claim(title), attrs)

        for _ in range(SIZES["product"]):
            launch = rng.randint(1990, 2024)
            name = names.claim(lambda: names.word(5) + " " + rng.choice(_PRODUCT_NOUNS))
            attrs = {
                "maker": rng.choice(companies).name,
                "price_usd": f"{rng.randint(1250, 249999) / 100:.2f}",
                "weight_grams": rng.randint(50, 9000),
                "launch_year": launch,
                "designer": born_between(launch - 65, launch - 22).name,
            }
            self._add("product", name, attrs)

        first_day = datetime.date(1990, 1, 1).toordinal()
        last_day = datetime.date(2024, 12, 31).toordinal()
        for _ in range(SIZES["event"]):
            name = names.claim(lambda: names.word(5) + " " + rng.choice(_EVENT_NOUNS))
            attrs = {
                "venue_city": rng.choice(cities).name,
                "date": datetime.date.fromordinal(rng.randint(first_day, last_day)).isoformat(),
                "organiser": rng.choice(companies).name,
                "attendance": rng.randint(500, 90_000),
            }
            self._add("event", name, attrs)

        for _ in range(SIZES["team"]):
            name = names.claim(lambda: names.word(5) + " " + rng.choice(_TEAM_NOUNS))
            attrs = {
                "home_city": rng.choice(cities).name,
                "coach": born_between(1945, 1990).name,
                "founded_year": rng.randint(1870, 2010),
                "stadium_capacity": rng.randint(5_000, 99_000),
            }
            self._add("team", name, attrs)

        for _ in range(SIZES["landmark"]):
            completed = rng.randint(1950, 2022)
            name = names.claim(lambda: names.word(5) + " " + rng.choice(_LANDMARK_NOUNS))
            attrs = {
                "city": rng.choice(cities).name,
                "architect": born_between(completed - 75, completed - 25).name,
                "height_m": rng.randint(20, 600),
                "completed_year": completed,
            }
            self._add("landmark", name, attrs)

        for _ in range(SIZES["mountain"]):
            ascent = rng.randint(1950, 2015)
            attrs = {
                "country": rng.choice(countries).name,
                "height_m": rng.randint(1000, 8800),
                "first_ascent_year": ascent,
                "first_climber": born_between(ascent - 60, ascent - 18).name,
            }
            self._add("mountain", names.claim(lambda: names.word(6)), attrs)

        for _ in range(SIZES["river"]):
            attrs = {
                "source_country": rng.choice(countries).name,
                "length_km": rng.randint(50, 4000),
                "mouth_city": rng.choice(cities).name,
            }
            self._add("river", names.claim(lambda: names.word(6)), attrs)

    def _add(self, kind: str, name: str, attrs: dict[str, Value]) -> Entity:
        entity = Entity(kind, name, attrs)
        self.entities.setdefault(kind, []).append(entity)
        self.by_name[name] = entity
        return entity
