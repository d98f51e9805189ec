"""The doctor reads ovs-vswitchd's send buffer from `ss` (real output saved from this machine)."""

from __future__ import annotations

from vclab.doctor import SEND_BUFFER, ovs_send_buffer

SS = """Netid State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess
p_raw UNCONN 0      0                [0]:*                *     users:(("ovs-vswitchd",pid=26982,fd=95)) skmem:(r0,rb212992,t0,tb8388608,f0,w0,o0,bl0,d0)
p_raw UNCONN 0      0              [all]:vcs0p1           *     users:(("ovs-vswitchd",pid=26982,fd=96)) skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d0)
"""


def test_the_sending_socket_is_the_protocol_0_one():
    assert ovs_send_buffer(SS) == SEND_BUFFER == 8 << 20


def test_no_socket_yet():
    assert ovs_send_buffer(SS.splitlines()[0]) is None
    assert ovs_send_buffer("") is None
