"""The doctor reads ovs-vswitchd's send buffer from `ss` (real output saved from this machine)."""

from __future__ import annotations

from vclab.doctor import RECEIVE_BUFFER, SEND_BUFFER, ovs_receive_buffer, ovs_send_buffer

SS = """Netid State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess
p_raw UNCONN 0      0                [0]:*                *     users:(("ovs-vswitchd",pid=26982,fd=95)) skmem:(r0,rb212992,t0,tb8388608,f0,w0,o0,bl0,d0)
p_raw UNCONN 0      0              [all]:vcs0p1           *     users:(("ovs-vswitchd",pid=26982,fd=96)) skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d0)
"""


def test_the_sending_socket_is_the_protocol_0_one():
    assert ovs_send_buffer(SS) == SEND_BUFFER == 8 << 20


def test_no_socket_yet():
    assert ovs_send_buffer(SS.splitlines()[0]) is None
    assert ovs_send_buffer("") is None


def test_the_receive_buffer_is_the_smallest_port_socket_one():
    two = SS + SS.splitlines()[2].replace("vcs0p1", "vcs0p2").replace("rb212992", "rb8388608") + "\n"
    assert ovs_receive_buffer(two) == 212992 < RECEIVE_BUFFER
    assert ovs_receive_buffer(SS.splitlines()[1]) is None  # only the sending socket: no port yet
