"""Country groups and data classes the policy model speaks of."""

from __future__ import annotations

from enum import StrEnum

EU27: frozenset[str] = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
    ]
)
EEA: frozenset[str] = EU27 | {"IS", "LI", "NO"}
COUNTRY_GROUPS: dict[str, frozenset[str]] = {"EEA": EEA, "EU": EU27}
"""Names a catalog accepts for a list of countries (`allowed_countries: [EEA]`)."""


class DataClass(StrEnum):
    """What kind of data a request carries; `personal` unless the caller says otherwise."""

    PUBLIC = "public"
    PERSONAL = "personal"
    SPECIAL = "special"
    HEALTH = "health"
    PAYMENT = "payment"
    FINANCIAL_SECURITIES = "financial_securities"
    INSURANCE = "insurance"


PERSONAL_DATA_CLASSES: frozenset[str] = frozenset(c.value for c in DataClass) - {"public"}
DATA_CLASS_DESCRIPTIONS: dict[DataClass, str] = {
    DataClass.PUBLIC: "No personal data; no residency constraint beyond tenant policy.",
    DataClass.PERSONAL: "Personal data (the default).",
    DataClass.SPECIAL: "Special categories of personal data (GDPR Art. 9).",
    DataClass.HEALTH: "Health data.",
    DataClass.PAYMENT: "Payment-system data.",
    DataClass.FINANCIAL_SECURITIES: "Data of securities-market regulated entities.",
    DataClass.INSURANCE: "Insurance policy and claim records.",
}


def parse_data_class(value: str) -> DataClass:
    """Parse a data class name; raise ValueError naming the bad value and the valid ones."""
    try:
        return DataClass(value.strip().lower())
    except ValueError:
        valid = ", ".join(c.value for c in DataClass)
        raise ValueError(f"unknown data class {value!r}; expected one of: {valid}") from None
