"""Settings of the measurement stage: the conversion window, what a contact and a new
customer cost, and the confidence of the intervals (`measurement:`), plus the
per-audience override (`audiences.<name>.measurement:`)."""

from __future__ import annotations

from pydantic import Field

from winback.settings import Settings


class ContactCosts(Settings):
    """What contacting one member costs, per audience channel (the shop's currency)."""

    email: float = Field(default=0.3, ge=0, description="per member mailed")
    sms: float = Field(default=4.0, ge=0, description="per member texted")
    call: float = Field(default=60.0, ge=0, description="per member called (an operator's time)")
    ads: float = Field(default=0.0, ge=0, description="per member of an ads audience (media is paid per view, "
                                                      "not per member: 0 unless the shop knows better)")


class MeasurementSettings(Settings):
    window_days: int = Field(
        default=30, ge=1, description="a member converted if they bought within this many days after entering")
    acquisition_cost: float = Field(
        default=1500, ge=0, description="what the shop pays to acquire a new customer; a win-back pays when an "
                                        "incremental customer costs less")
    contact_costs: ContactCosts = Field(default_factory=ContactCosts,
                                        description="per member contacted, per channel")
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="confidence level of the intervals; 1 - confidence is the "
                                                "two-sided significance level")


class AudienceMeasurement(Settings):
    """One audience's exceptions to `measurement:` (null = the global value)."""

    window_days: int | None = Field(default=None, ge=1, description="this audience's conversion window")
    contact_cost: float | None = Field(
        default=None, ge=0, description="per member contacted, instead of the channel's contact_costs")
