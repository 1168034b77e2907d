"""The analytics service's transport filter: known values by name, unknown ones refused with the known names."""
from __future__ import annotations

import pytest

from inference import errors
from inference.rpc import analytics
from predmesh.v1 import model_pb2


def test_known_transports_map_to_their_short_names():
    assert analytics.transport_name(0) == ""
    assert analytics.transport_name(model_pb2.TRANSPORT_REST) == "rest"


def test_an_unknown_transport_is_invalid_argument_naming_the_known_ones():
    with pytest.raises(errors.InvalidArgument, match="transport 99 is not a known transport; use one of") as info:
        analytics.transport_name(99)
    assert "TRANSPORT_GRPC" in str(info.value) and "TRANSPORT_UNSPECIFIED" not in str(info.value)
