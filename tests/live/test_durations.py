"""Durations of the live commands and the server's live routes: the error names whichever flag or
parameter the caller read, which every caller must say."""

from datetime import timedelta

import pytest

from hepta.errors import HeptaError
from hepta.live.durations import parse_duration


def test_units_and_the_error_naming_the_callers_flag_or_parameter():
    assert parse_duration("90s", "--window") == timedelta(seconds=90)
    assert parse_duration(" 1.5h ", "window") == timedelta(minutes=90)
    with pytest.raises(HeptaError, match=r"^window 'soon' is not a duration; write a number and s, m, h or d"):
        parse_duration("soon", "window")  # an HTTP parameter, not a CLI flag


def test_the_flag_has_no_default_that_could_name_the_wrong_one():
    with pytest.raises(TypeError):
        parse_duration("5m")
