"""Errors that carry a message meant for the person at the CLI or in the app."""


class CureError(Exception):
    """Base class: every error raised on bad input derives from this."""


class DataError(CureError):
    """A data file is missing, malformed, badly encoded or refers to unknown ids."""


class ForgetSpecError(CureError):
    """A deletion request cannot be parsed or selects nothing / everything."""


class UnknownIdError(CureError):
    """A user or item id that the dataset does not contain."""


class CacheError(CureError):
    """A cached artefact is unreadable or fails its checksum."""


class TrainingError(CureError):
    """Training diverged (NaN or exploding loss); nothing was written."""


class SettingsError(CureError, ValueError):
    """An option is out of range or names something that does not exist (a method, a module)."""


def parse_choice(enum_cls, value, what: str):
    """`enum_cls(value)`, or a SettingsError that names the choices (for methods, corruptions, ...)."""
    try:
        return enum_cls(value)
    except ValueError:
        raise SettingsError(f"unknown {what} {value!r}; choose one of {[m.value for m in enum_cls]}") from None
