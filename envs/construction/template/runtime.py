"""The computations behind computation tools, shared by the generator and the code it writes.

`codegen` copies the one function a tool needs verbatim into that tool's body, and the generator
calls the same function in its own process to compute sub-answers and to check that no wrong
input gives a right answer: one implementation of the arithmetic, so an environment's answers and
what its code returns cannot drift apart. Hence the style: each function stands alone (imports
inside, no annotations, no globals, no helper calls), takes the slot values and the tool's data
(`spec`), and returns `(value, unit)` or an error message for the model to read.

This is the project's own code; model-written tool code only ever runs in the sandbox.
"""


def _fmt(value, precision):
    """Numbers as tools print them: floats with `precision` decimals, everything else as is."""
    if isinstance(value, float):
        return f"{value:.{precision}f}"
    return str(value)


def _is_date(text):
    """Whether `text` is a real calendar date written YYYY-MM-DD (nothing more lenient)."""
    import datetime
    import re

    if not re.fullmatch("[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return False
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _convert(values, spec):
    units = spec["units"]
    for slot in ("from_unit", "to_unit"):
        if values[slot] not in units:
            return f"Error: unknown unit '{values[slot]}'; use one of: {', '.join(units)}."
    return values["value"] * units[values["from_unit"]] / units[values["to_unit"]], values["to_unit"]


def _arithmetic(values, spec):
    first, second, operation = values["a"], values["b"], values["operation"]
    if operation == "add":
        return first + second, ""
    if operation == "subtract":
        return first - second, ""
    if operation == "multiply":
        return first * second, ""
    if second == 0:
        return "Error: cannot divide by zero; 'b' must not be 0."
    return first / second, ""


def _date_difference(values, spec):
    import datetime

    start = datetime.date.fromisoformat(values["start_date"])
    end = datetime.date.fromisoformat(values["end_date"])
    days = (end - start).days
    if values["unit"] == "weeks":
        return days / 7, "weeks"
    return days, "days"


def _date_describe(values, spec):
    import datetime

    day = datetime.date.fromisoformat(values["date"])
    weekday = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")[day.weekday()]
    months = "January February March April May June July August September October November December"
    month = months.split()[day.month - 1]
    if values["field"] == "in_words":
        return f"{weekday} {day.day} {month} {day.year}", ""
    if values["field"] == "weekday":
        return weekday, ""
    if values["field"] == "month":
        return month, ""
    return day.timetuple().tm_yday, ""


def _date_shift(values, spec):
    import datetime

    step = 7 if values["unit"] == "weeks" else 1
    try:
        day = datetime.date.fromisoformat(values["date"]) + datetime.timedelta(days=values["amount"] * step)
    except OverflowError:
        return "Error: the resulting date is outside the calendar; use a smaller amount."
    return day.isoformat(), ""


def _currency(values, spec):
    rates = spec["rates"]
    found = []
    for slot in ("from_currency", "to_currency"):
        key = " ".join(str(values[slot]).split()).lower()
        if key not in rates:
            known = f" Known currencies include: {', '.join(spec['hints'])}." if spec["hints"] else ""
            return f'Error: unknown currency "{values[slot]}".{known}'
        found.append(rates[key][1])
    return values["amount"] / found[0] * found[1], ""


def _percentage(values, spec):
    sign = 1 if values["direction"] == "increase" else -1
    return values["value"] * (1 + sign * values["percent"] / 100), ""


FAMILIES = {
    function.__name__[1:]: function
    for function in (
        _convert,
        _arithmetic,
        _date_difference,
        _date_describe,
        _date_shift,
        _currency,
        _percentage,
    )
}


def norm(text: str) -> str:
    """How every tool compares names: case and runs of whitespace do not matter."""
    return " ".join(str(text).split()).lower()


def format_number(value: object, precision: int = 2) -> str:
    return _fmt(value, precision)
