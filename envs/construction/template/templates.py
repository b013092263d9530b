"""The question templates: relations (look a fact up) and computations (work a value out).

A template is one kind of sub-question. It knows how to ask itself with a concrete subject
(`question`), how to be nested inside another template's question (`phrase`, "the director of
the film "X""), what tool answers it, and — for the documenter, which reads sub-questions as text —
how to parse a question it rendered back into its inputs. Multi-hop questions chain relations whose
object kind is the next relation's subject kind (film → director → birth city → country...).

`KINDS` describes entity kinds; `LOOKUP_FAMILIES` and `COMPUTE_FAMILIES` say which templates share
functionality, which is what function integration merges and functional generalization widens.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from envs.construction.template import runtime


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    plural: str
    ref: str  # how a question names one: 'the film "{name}"'
    key: str  # what identifies one: "title", "name", "full name"
    domain: str

    @property
    def param(self) -> str:
        return self.name

    @property
    def list_param(self) -> str:
        return self.plural.replace(" ", "_")

    def refer(self, name: str) -> str:
        return self.ref.format(name=name)


def article(noun: str) -> str:
    """ "a film", "an event"."""
    return ("an " if noun[0] in "aeiou" else "a ") + noun


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("person", "person", "people", "{name}", "full name", "people"),
        Kind("country", "country", "countries", "{name}", "name", "places"),
        Kind("city", "city", "cities", "the city of {name}", "name", "places"),
        Kind("landmark", "landmark", "landmarks", "the {name}", "name", "places"),
        Kind("mountain", "mountain", "mountains", "Mount {name}", "name", "places"),
        Kind("river", "river", "rivers", "the river {name}", "name", "places"),
        Kind("company", "company", "companies", "the company {name}", "name", "organisations"),
        Kind("university", "university", "universities", "the {name}", "name", "organisations"),
        Kind("team", "team", "teams", "the {name}", "name", "organisations"),
        Kind("film", "film", "films", 'the film "{name}"', "title", "creative works"),
        Kind("book", "book", "books", 'the book "{name}"', "title", "creative works"),
        Kind("album", "album", "albums", 'the album "{name}"', "title", "creative works"),
        Kind("song", "song", "songs", 'the song "{name}"', "title", "creative works"),
        Kind("product", "product", "products", "the {name}", "name", "products"),
        Kind("event", "event", "events", "the {name}", "name", "events"),
    )
}

# Value types of a relation's object: an entity kind (chains continue from it), or a plain value.
ENTITY = "entity"
VALUE_TYPES = ("year", "count", "measure", "money", "percent", "date", "text", "currency")


@dataclass(frozen=True)
class Relation:
    """`kind`'s `attribute`: e.g. film.director, a person."""

    kind: str
    attribute: str
    vtype: str
    question: str
    phrase: str
    noun: str
    target: str | None = None  # the entity kind of the object, when vtype is ENTITY
    unit: str | None = None  # for measures, the unit its conversions start from
    family: str | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.attribute}"

    @property
    def tool(self) -> str:
        return f"get_{self.kind}_{self.attribute}"

    @property
    def domain(self) -> str:
        return KINDS[self.kind].domain

    @property
    def description(self) -> str:
        kind = KINDS[self.kind]
        return f"Look up the {self.noun} of {article(kind.label)}, given the {kind.label}'s {kind.key}."


def _rel(kind: str, attribute: str, target_or_type: str, question: str, phrase: str, noun: str, **kw: Any):
    if target_or_type in KINDS:
        return Relation(kind, attribute, ENTITY, question, phrase, noun, target=target_or_type, **kw)
    return Relation(kind, attribute, target_or_type, question, phrase, noun, **kw)


RELATIONS: tuple[Relation, ...] = (
    # people
    _rel(
        "person", "birth_city", "city", "In which city was {s} born?", "the birth city of {s}", "birth city"
    ),
    _rel(
        "person", "birth_year", "year", "In which year was {s} born?", "the birth year of {s}", "birth year"
    ),
    _rel(
        "person",
        "occupation",
        "text",
        "What is the occupation of {s}?",
        "the occupation of {s}",
        "occupation",
    ),
    _rel(
        "person", "employer", "company", "Which company does {s} work for?", "the employer of {s}", "employer"
    ),
    _rel("person", "spouse", "person", "Who is the spouse of {s}?", "the spouse of {s}", "spouse"),
    _rel(
        "person",
        "alma_mater",
        "university",
        "Which university did {s} attend?",
        "the alma mater of {s}",
        "alma mater",
    ),
    _rel(
        "person",
        "height_cm",
        "measure",
        "How tall is {s} in centimetres?",
        "the height in centimetres of {s}",
        "height in centimetres",
        unit="cm",
    ),
    _rel(
        "person",
        "nationality",
        "country",
        "Which country is {s} a citizen of?",
        "the home country of {s}",
        "nationality",
    ),
    # places: countries
    _rel("country", "capital", "city", "What is the capital of {s}?", "the capital of {s}", "capital"),
    _rel(
        "country", "currency", "currency", "Which currency is used in {s}?", "the currency of {s}", "currency"
    ),
    _rel(
        "country",
        "official_language",
        "text",
        "What is the official language of {s}?",
        "the official language of {s}",
        "official language",
    ),
    _rel("country", "continent", "text", "On which continent is {s}?", "the continent of {s}", "continent"),
    _rel(
        "country",
        "population",
        "count",
        "What is the population of {s}?",
        "the population of {s}",
        "population",
        family="population",
    ),
    _rel(
        "country",
        "area_km2",
        "count",
        "What is the area of {s} in square kilometres?",
        "the area in square kilometres of {s}",
        "area in square kilometres",
        family="area",
    ),
    _rel(
        "country",
        "head_of_state",
        "person",
        "Who is the head of state of {s}?",
        "the head of state of {s}",
        "head of state",
        family="leader",
    ),
    _rel(
        "country",
        "vat_percent",
        "percent",
        "What is the VAT rate of {s} in percent?",
        "the VAT rate in percent of {s}",
        "VAT rate in percent",
    ),
    # places: cities
    _rel(
        "city",
        "country",
        "country",
        "In which country is {s}?",
        "the country of {s}",
        "country",
        family="country",
    ),
    _rel(
        "city",
        "population",
        "count",
        "How many people live in {s}?",
        "the population of {s}",
        "population",
        family="population",
    ),
    _rel(
        "city",
        "founded_year",
        "year",
        "In which year was {s} founded?",
        "the founding year of {s}",
        "founding year",
        family="founding",
    ),
    _rel("city", "mayor", "person", "Who is the mayor of {s}?", "the mayor of {s}", "mayor", family="leader"),
    _rel(
        "city",
        "area_km2",
        "count",
        "How large is {s} in square kilometres?",
        "the area in square kilometres of {s}",
        "area in square kilometres",
        family="area",
    ),
    _rel(
        "city",
        "elevation_m",
        "measure",
        "At what elevation in metres does {s} lie?",
        "the elevation in metres of {s}",
        "elevation in metres",
        unit="m",
    ),
    # places: landmarks, mountains, rivers
    _rel(
        "landmark",
        "city",
        "city",
        "In which city stands {s}?",
        "the location of {s}",
        "city",
        family="location",
    ),
    _rel(
        "landmark",
        "architect",
        "person",
        "Who was the architect of {s}?",
        "the architect of {s}",
        "architect",
        family="creator",
    ),
    _rel(
        "landmark",
        "height_m",
        "measure",
        "How tall is {s} in metres?",
        "the height in metres of {s}",
        "height in metres",
        unit="m",
        family="height",
    ),
    _rel(
        "landmark",
        "completed_year",
        "year",
        "In which year was {s} completed?",
        "the completion year of {s}",
        "completion year",
    ),
    _rel(
        "mountain",
        "country",
        "country",
        "In which country lies {s}?",
        "the country of {s}",
        "country",
        family="country",
    ),
    _rel(
        "mountain",
        "height_m",
        "measure",
        "How high is {s} in metres?",
        "the height in metres of {s}",
        "height in metres",
        unit="m",
        family="height",
    ),
    _rel(
        "mountain",
        "first_ascent_year",
        "year",
        "In which year was {s} first climbed?",
        "the first-ascent year of {s}",
        "first-ascent year",
    ),
    _rel(
        "mountain",
        "first_climber",
        "person",
        "Who first climbed {s}?",
        "the first climber of {s}",
        "first climber",
        family="creator",
    ),
    _rel(
        "river",
        "source_country",
        "country",
        "In which country does {s} rise?",
        "the source country of {s}",
        "source country",
        family="country",
    ),
    _rel(
        "river",
        "length_km",
        "measure",
        "How long is {s} in kilometres?",
        "the length in kilometres of {s}",
        "length in kilometres",
        unit="km",
    ),
    _rel(
        "river",
        "mouth_city",
        "city",
        "At which city does {s} reach the sea?",
        "the mouth city of {s}",
        "mouth city",
    ),
    # organisations
    _rel("company", "founder", "person", "Who founded {s}?", "the founder of {s}", "founder"),
    _rel(
        "company",
        "headquarters",
        "city",
        "In which city is {s} headquartered?",
        "the headquarters city of {s}",
        "headquarters city",
        family="location",
    ),
    _rel(
        "company",
        "founded_year",
        "year",
        "In which year was {s} established?",
        "the founding year of {s}",
        "founding year",
        family="founding",
    ),
    _rel(
        "company",
        "ceo",
        "person",
        "Who is the chief executive of {s}?",
        "the chief executive of {s}",
        "chief executive",
        family="leader",
    ),
    _rel(
        "company",
        "employees",
        "count",
        "How many employees does {s} have?",
        "the number of employees of {s}",
        "number of employees",
        family="headcount",
    ),
    _rel(
        "company",
        "industry",
        "text",
        "In which industry does {s} operate?",
        "the industry of {s}",
        "industry",
    ),
    _rel(
        "university",
        "city",
        "city",
        "In which city is {s} located?",
        "the home city of {s}",
        "city",
        family="location",
    ),
    _rel(
        "university",
        "founded_year",
        "year",
        "When was {s} founded?",
        "the founding year of {s}",
        "founding year",
        family="founding",
    ),
    _rel(
        "university",
        "rector",
        "person",
        "Who is the rector of {s}?",
        "the rector of {s}",
        "rector",
        family="leader",
    ),
    _rel(
        "university",
        "students",
        "count",
        "How many students does {s} have?",
        "the number of students of {s}",
        "number of students",
        family="headcount",
    ),
    _rel(
        "team",
        "home_city",
        "city",
        "Which city is {s} based in?",
        "the home city of {s}",
        "home city",
        family="location",
    ),
    _rel("team", "coach", "person", "Who coaches {s}?", "the coach of {s}", "coach", family="leader"),
    _rel(
        "team",
        "founded_year",
        "year",
        "In which year were {s} formed?",
        "the founding year of {s}",
        "founding year",
        family="founding",
    ),
    _rel(
        "team",
        "stadium_capacity",
        "count",
        "How many spectators fit in the stadium of {s}?",
        "the stadium capacity of {s}",
        "stadium capacity",
    ),
    # creative works
    _rel(
        "film", "director", "person", "Who directed {s}?", "the director of {s}", "director", family="creator"
    ),
    _rel(
        "film",
        "release_year",
        "year",
        "In which year was {s} released?",
        "the release year of {s}",
        "release year",
        family="release",
    ),
    _rel(
        "film",
        "studio",
        "company",
        "Which studio produced {s}?",
        "the studio of {s}",
        "studio",
        family="publisher",
    ),
    _rel(
        "film",
        "runtime_minutes",
        "count",
        "How many minutes does {s} run?",
        "the runtime in minutes of {s}",
        "runtime in minutes",
    ),
    _rel(
        "film",
        "lead_actor",
        "person",
        "Who played the lead role in {s}?",
        "the lead actor of {s}",
        "lead actor",
    ),
    _rel(
        "film",
        "filming_city",
        "city",
        "In which city was {s} filmed?",
        "the filming city of {s}",
        "filming city",
    ),
    _rel("book", "author", "person", "Who wrote {s}?", "the author of {s}", "author", family="creator"),
    _rel(
        "book",
        "publisher",
        "company",
        "Which company published {s}?",
        "the publisher of {s}",
        "publisher",
        family="publisher",
    ),
    _rel(
        "book",
        "publication_year",
        "year",
        "In which year was {s} published?",
        "the publication year of {s}",
        "publication year",
        family="release",
    ),
    _rel(
        "book",
        "pages",
        "count",
        "How many pages does {s} have?",
        "the number of pages of {s}",
        "number of pages",
    ),
    _rel(
        "book",
        "language",
        "text",
        "In which language was {s} written?",
        "the original language of {s}",
        "language",
    ),
    _rel("album", "artist", "person", "Who recorded {s}?", "the artist of {s}", "artist", family="creator"),
    _rel(
        "album",
        "record_label",
        "company",
        "Which record label released {s}?",
        "the record label of {s}",
        "record label",
        family="publisher",
    ),
    _rel(
        "album",
        "release_year",
        "year",
        "In which year did {s} come out?",
        "the release year of {s}",
        "release year",
        family="release",
    ),
    _rel(
        "album",
        "tracks",
        "count",
        "How many tracks are on {s}?",
        "the number of tracks on {s}",
        "number of tracks",
    ),
    _rel(
        "song",
        "songwriter",
        "person",
        "Who wrote the music of {s}?",
        "the songwriter of {s}",
        "songwriter",
        family="creator",
    ),
    _rel("song", "album", "album", "On which album does {s} appear?", "the album of {s}", "album"),
    _rel(
        "song",
        "length_seconds",
        "measure",
        "How long is {s} in seconds?",
        "the length in seconds of {s}",
        "length in seconds",
        unit="s",
    ),
    # products
    _rel("product", "maker", "company", "Which company makes {s}?", "the maker of {s}", "maker"),
    _rel(
        "product",
        "price_usd",
        "money",
        "How much does {s} cost in US dollars?",
        "the price in US dollars of {s}",
        "price in US dollars",
    ),
    _rel(
        "product",
        "weight_grams",
        "measure",
        "How much does {s} weigh in grams?",
        "the weight in grams of {s}",
        "weight in grams",
        unit="g",
    ),
    _rel(
        "product",
        "launch_year",
        "year",
        "In which year was {s} launched?",
        "the launch year of {s}",
        "launch year",
        family="release",
    ),
    _rel(
        "product",
        "designer",
        "person",
        "Who designed {s}?",
        "the designer of {s}",
        "designer",
        family="creator",
    ),
    # events
    _rel(
        "event",
        "venue_city",
        "city",
        "In which city did {s} take place?",
        "the host city of {s}",
        "host city",
        family="location",
    ),
    _rel("event", "date", "date", "On which date did {s} take place?", "the date of {s}", "date"),
    _rel(
        "event", "organiser", "company", "Which company organised {s}?", "the organiser of {s}", "organiser"
    ),
    _rel(
        "event",
        "attendance",
        "count",
        "How many people attended {s}?",
        "the attendance of {s}",
        "attendance",
        family="headcount",
    ),
)


@dataclass(frozen=True)
class LookupFamily:
    """Relations of different kinds that do the same job, merged into one tool with a type parameter."""

    tool: str
    param: str
    type_param: str
    description: str


LOOKUP_FAMILIES: dict[str, LookupFamily] = {
    "creator": LookupFamily("get_creator", "work", "work_type", "Look up who created a work"),
    "release": LookupFamily("get_release_year", "work", "work_type", "Look up the year a work came out"),
    "publisher": LookupFamily(
        "get_publisher", "work", "work_type", "Look up the company that brought out a work"
    ),
    "founding": LookupFamily(
        "get_founding_year", "entity", "entity_type", "Look up the year something was founded"
    ),
    "leader": LookupFamily(
        "get_leader", "entity", "entity_type", "Look up who leads a country or organisation"
    ),
    "location": LookupFamily(
        "get_location", "entity", "entity_type", "Look up the city where something is located"
    ),
    "headcount": LookupFamily(
        "get_headcount", "entity", "entity_type", "Look up how many people belong or came"
    ),
    "population": LookupFamily(
        "get_population", "place", "place_type", "Look up how many people live in a place"
    ),
    "area": LookupFamily(
        "get_area", "place", "place_type", "Look up the area of a place in square kilometres"
    ),
    "country": LookupFamily("get_country", "place", "place_type", "Look up the country a place belongs to"),
    "height": LookupFamily("get_height", "structure", "structure_type", "Look up a height in metres"),
}


# --------------------------------------------------------------------------- computations


@dataclass(frozen=True)
class ComputeFamily:
    """A general computation; narrow templates fix some of its slots (km_to_miles fixes the units)."""

    name: str
    tool: str
    runtime: str  # the function in `runtime` that computes it
    description: str
    params: tuple[dict[str, Any], ...]  # the general tool's parameters, one per slot
    object_param: str  # the name used when parameter-type generalization packs arguments in an object
    extra: dict[str, Any] = field(default_factory=dict)  # unit tables etc., copied into the tool's spec


@dataclass(frozen=True)
class Input:
    """One input of a computation template: its parameter, the slot it fills, and how a question says it."""

    name: str
    slot: str
    vtype: str  # "number", "year", "count", "date", "money", "percent", "currency", "days", or a unit
    literal: str  # "{} kilometres"
    description: str


@dataclass(frozen=True)
class Computation:
    name: str
    family: str
    inputs: tuple[Input, ...]
    fixed: dict[str, Any]
    question: str
    description: str
    domain: str = "dates and units"

    @property
    def tool(self) -> str:
        return self.name


def _param(name: str, slot: str, type_: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "slot": slot, "type": type_, "description": description, "required": True, **extra}


LENGTH_UNITS = {"km": 1000.0, "mi": 1609.344, "m": 1.0, "ft": 0.3048, "cm": 0.01, "in": 0.0254}
MASS_UNITS = {"g": 1.0, "kg": 1000.0, "oz": 28.349523125, "lb": 453.59237}
DURATION_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}


def _conversion(name: str, tool: str, units: dict[str, float], what: str) -> ComputeFamily:
    return ComputeFamily(
        name,
        tool,
        "convert",
        f"Convert a {what} from one unit to another.",
        (
            _param("value", "value", "number", f"The {what} to convert."),
            _param("from_unit", "from_unit", "enum", "The unit the value is given in.", values=list(units)),
            _param("to_unit", "to_unit", "enum", "The unit to convert to.", values=list(units)),
        ),
        "quantity",
        {"units": units},
    )


COMPUTE_FAMILIES: dict[str, ComputeFamily] = {
    family.name: family
    for family in (
        _conversion("length", "convert_length", LENGTH_UNITS, "length or distance"),
        _conversion("mass", "convert_mass", MASS_UNITS, "mass or weight"),
        _conversion("duration", "convert_duration", DURATION_UNITS, "duration"),
        ComputeFamily(
            "arithmetic",
            "calculate",
            "arithmetic",
            "Apply an arithmetic operation to two numbers: a (operation) b.",
            (
                _param("a", "a", "number", "The first operand."),
                _param("b", "b", "number", "The second operand."),
                _param(
                    "operation",
                    "operation",
                    "enum",
                    "What to compute.",
                    values=["add", "subtract", "multiply", "divide"],
                ),
            ),
            "operands",
        ),
        ComputeFamily(
            "date_difference",
            "date_difference",
            "date_difference",
            "Measure the time from a start date to an end date.",
            (
                _param("start_date", "start_date", "date", "The earlier date, YYYY-MM-DD."),
                _param("end_date", "end_date", "date", "The later date, YYYY-MM-DD."),
                _param("unit", "unit", "enum", "The unit of the result.", values=["days", "weeks"]),
            ),
            "period",
        ),
        ComputeFamily(
            "date_describe",
            "describe_date",
            "date_describe",
            "Describe a calendar date: its weekday, its month, or its day of the year.",
            (
                _param("date", "date", "date", "The date, YYYY-MM-DD."),
                _param(
                    "field",
                    "field",
                    "enum",
                    "What to report.",
                    values=["in_words", "weekday", "month", "day_of_year"],
                ),
            ),
            "request",
        ),
        ComputeFamily(
            "date_shift",
            "shift_date",
            "date_shift",
            "Move a date forward (or back, with a negative amount) by days or weeks.",
            (
                _param("date", "date", "date", "The starting date, YYYY-MM-DD."),
                _param("amount", "amount", "integer", "How many units to move the date by."),
                _param("unit", "unit", "enum", "The unit of the amount.", values=["days", "weeks"]),
            ),
            "shift",
        ),
        ComputeFamily(
            "currency",
            "convert_currency",
            "currency",
            "Convert an amount of money between currencies at today's exchange rate.",
            (
                _param("amount", "amount", "number", "The amount of money."),
                _param("from_currency", "from_currency", "string", "The currency the amount is in."),
                _param("to_currency", "to_currency", "string", "The currency to convert to."),
            ),
            "money",
        ),
        ComputeFamily(
            "percentage",
            "apply_percentage",
            "percentage",
            "Increase or decrease a value by a percentage (for example a price plus tax).",
            (
                _param("value", "value", "number", "The starting value."),
                _param("percent", "percent", "number", "The percentage to apply."),
                _param(
                    "direction",
                    "direction",
                    "enum",
                    "Whether to add or take off.",
                    values=["increase", "decrease"],
                ),
            ),
            "change",
        ),
    )
}

REFERENCE_CURRENCY = "US dollar"


def _conv(
    name: str, family: str, source: str, target: str, param: str, words: str, target_words: str
) -> Computation:
    return Computation(
        name,
        family,
        (Input(param, "value", source, "{} " + words, f"The value in {words}."),),
        {"from_unit": source, "to_unit": target},
        "What is {" + param + "}, converted to " + target_words + "?",
        f"Convert a value from {words} to {target_words}.",
    )


COMPUTATIONS: tuple[Computation, ...] = (
    _conv("km_to_miles", "length", "km", "mi", "km", "kilometres", "miles"),
    _conv("miles_to_km", "length", "mi", "km", "miles", "miles", "kilometres"),
    _conv("meters_to_feet", "length", "m", "ft", "meters", "metres", "feet"),
    _conv("feet_to_meters", "length", "ft", "m", "feet", "feet", "metres"),
    _conv("cm_to_inches", "length", "cm", "in", "cm", "centimetres", "inches"),
    _conv("grams_to_ounces", "mass", "g", "oz", "grams", "grams", "ounces"),
    _conv("ounces_to_grams", "mass", "oz", "g", "ounces", "ounces", "grams"),
    _conv("kilograms_to_pounds", "mass", "kg", "lb", "kilograms", "kilograms", "pounds"),
    _conv("seconds_to_minutes", "duration", "s", "min", "seconds", "seconds", "minutes"),
    Computation(
        "add_numbers",
        "arithmetic",
        (
            Input("a", "a", "count", "{}", "The first number."),
            Input("b", "b", "count", "{}", "The second number."),
        ),
        {"operation": "add"},
        "What is the sum of {a} and {b}?",
        "Add two numbers.",
    ),
    Computation(
        "subtract_numbers",
        "arithmetic",
        (
            Input("a", "a", "count", "{}", "The number to subtract from."),
            Input("b", "b", "count", "{}", "The number to subtract."),
        ),
        {"operation": "subtract"},
        "By how much does {a} exceed {b}?",
        "Subtract the second number from the first.",
    ),
    Computation(
        "years_between",
        "arithmetic",
        (
            Input("start_year", "b", "year", "{}", "The earlier year."),
            Input("end_year", "a", "year", "{}", "The later year."),
        ),
        {"operation": "subtract"},
        "How many years passed between {start_year} and {end_year}?",
        "Count the years from a start year to an end year.",
    ),
    Computation(
        "days_between",
        "date_difference",
        (
            Input("start_date", "start_date", "date", "{}", "The earlier date, YYYY-MM-DD."),
            Input("end_date", "end_date", "date", "{}", "The later date, YYYY-MM-DD."),
        ),
        {"unit": "days"},
        "How many days passed between {start_date} and {end_date}?",
        "Count the days from a start date to an end date.",
    ),
    Computation(
        "date_in_words",
        "date_describe",
        (Input("date", "date", "date", "{}", "The date, YYYY-MM-DD."),),
        {"field": "in_words"},
        "What is {date}, written out in words?",
        "Write a date out in words, with its day of the week.",
    ),
    Computation(
        "add_days",
        "date_shift",
        (
            Input("date", "date", "date", "{}", "The starting date, YYYY-MM-DD."),
            Input("days", "amount", "days", "{} days", "How many days to add."),
        ),
        {"unit": "days"},
        "Which date is {days} after {date}?",
        "Add a number of days to a date.",
    ),
    Computation(
        "convert_from_usd",
        "currency",
        (
            Input("amount", "amount", "money", "{} US dollars", "The amount in US dollars."),
            Input("currency", "to_currency", "currency", "{}", "The currency to convert to."),
        ),
        {"from_currency": REFERENCE_CURRENCY},
        "How much is {amount} in {currency}?",
        "Convert an amount in US dollars into another currency.",
    ),
    Computation(
        "price_with_tax",
        "percentage",
        (
            Input("price", "value", "money", "{} US dollars", "The price before tax."),
            Input("rate", "percent", "percent", "{} percent", "The tax rate in percent."),
        ),
        {"direction": "increase"},
        "What is {price} plus a tax of {rate}?",
        "Add a percentage tax to a price.",
    ),
)

Template = Relation | Computation
TEMPLATES: dict[str, Template] = {t.name: t for t in (*RELATIONS, *COMPUTATIONS)}
RELATIONS_BY_KIND: dict[str, list[Relation]] = {}
for _relation in RELATIONS:
    RELATIONS_BY_KIND.setdefault(_relation.kind, []).append(_relation)
RELATION_AT: dict[tuple[str, str], Relation] = {(r.kind, r.attribute): r for r in RELATIONS}
DOMAINS: tuple[str, ...] = tuple(dict.fromkeys([*(k.domain for k in KINDS.values()), "dates and units"]))

# Which unit conversion continues a chain that ends in a measure of that unit.
CONVERSION_FROM: dict[str, Computation] = {}
for _computation in COMPUTATIONS:
    if COMPUTE_FAMILIES[_computation.family].runtime == "convert":
        CONVERSION_FROM.setdefault(_computation.fixed["from_unit"], _computation)


# --------------------------------------------------------------------------- values as question text

_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_PATTERNS = {"date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}", "currency": r"[A-Z][a-z]+ [a-z]+"}


def literal_text(value: Any) -> str:
    """How a question writes a value: ints plainly, other numbers with two decimals."""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def parse_literal(vtype: str, text: str) -> Any:
    if vtype in ("date", "currency"):
        return text
    return float(text) if "." in text else int(text)


def render(template: Template, inputs: dict[str, str]) -> str:
    """The template's question with each input already written as text (a reference or a phrase)."""
    if isinstance(template, Relation):
        return template.question.format(s=inputs["s"])
    return template.question.format(
        **{item.name: item.literal.format(inputs[item.name]) for item in template.inputs}
    )


@dataclass(frozen=True)
class Parsed:
    template: Template
    inputs: dict[str, Any]  # relation: {"s": subject name}; computation: {input name: value}


def _compile(template: Template) -> re.Pattern[str]:
    if isinstance(template, Relation):
        before, after = template.question.split("{s}")
        ref_before, ref_after = KINDS[template.kind].ref.split("{name}")
        name = '[^"]+?' if ref_after == '"' else r"[A-Z][^?]*?"
        return re.compile(re.escape(before + ref_before) + f"(?P<s>{name})" + re.escape(ref_after + after))
    pattern = ""
    for index, piece in enumerate(re.split(r"\{(\w+)\}", template.question)):
        if index % 2 == 0:
            pattern += re.escape(piece)
            continue
        item = next(i for i in template.inputs if i.name == piece)
        left, right = item.literal.split("{}")
        pattern += re.escape(left) + f"(?P<{piece}>{_PATTERNS.get(item.vtype, _NUMBER)})" + re.escape(right)
    return re.compile(pattern)


_COMPILED: tuple[tuple[Template, re.Pattern[str]], ...] = tuple((t, _compile(t)) for t in TEMPLATES.values())


def parse(text: str) -> list[Parsed]:
    """Every reading of a sub-question as one of the templates (the decomposer makes sure there is one)."""
    readings = []
    for template, pattern in _COMPILED:
        found = pattern.fullmatch(text)
        if found is None:
            continue
        if isinstance(template, Relation):
            readings.append(Parsed(template, {"s": found["s"]}))
        else:
            inputs = {item.name: parse_literal(item.vtype, found[item.name]) for item in template.inputs}
            readings.append(Parsed(template, inputs))
    return readings


@functools.cache
def vocabulary() -> str:
    """All fixed text that questions, tool documents and tool code are made of: no name may occur in it."""
    import inspect

    parts: list[str] = [inspect.getsource(runtime)]
    for kind in KINDS.values():
        parts += [kind.name, kind.label, kind.plural, kind.ref, kind.key, kind.domain]
    for relation in RELATIONS:
        parts += [relation.attribute, relation.question, relation.phrase, relation.noun, relation.description]
    for family in LOOKUP_FAMILIES.values():
        parts += [family.tool, family.param, family.type_param, family.description]
    for compute in COMPUTE_FAMILIES.values():
        parts += [
            compute.tool,
            compute.description,
            compute.object_param,
            repr(compute.params),
            repr(compute.extra),
        ]
    for computation in COMPUTATIONS:
        parts += [computation.name, computation.question, computation.description, repr(computation.inputs)]
    from envs.construction.template import codegen, tools  # option wording, error messages

    parts += [inspect.getsource(tools), inspect.getsource(codegen)]
    return "\n".join(parts)
