"""The marker of the slow cases kept out of the default suite (which must run in under 10 minutes
on 2 cores); `VIDBATCH_EXTENDED_TESTS=1 make test` runs them too. Each one's guarantee has a
cheaper case in the default suite, named where the marker is used."""

from __future__ import annotations

import os

import pytest

extended = pytest.mark.skipif(os.environ.get("VIDBATCH_EXTENDED_TESTS") != "1", reason="VIDBATCH_EXTENDED_TESTS=1")
