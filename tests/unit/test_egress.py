"""rigs.egress on strace output (lines as strace 6.1 prints them with -f -y)."""

from __future__ import annotations

from rigs.egress import ROOT, addresses, exposed, leaks, parse_trace

ROOT_NS = "net:[4026531833]"
SUBNETS = ["10.10.0.0/24", "10.20.0.0/24"]

TRACE = """\
100   sendto(3<UDPv6:[1]>, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(9), sin_addr=inet_addr("127.0.0.1")}, 16) = 1
100   bind(4<NETLINK:[2]>, {sa_family=AF_NETLINK, nl_pid=0, nl_groups=00000000}, 12) = 0
100   vfork( <unfinished ...>
101   unshare(CLONE_NEWNET)             = 0
101   connect(5, {sa_family=AF_INET, sin_port=htons(5201), sin_addr=inet_addr("10.20.0.2")}, 16) = 0
100   <... vfork resumed>)              = 101
100   clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f) = 102
102   setns(3<net:[4026533336]>, 0)     = 0
102   setns(4<mnt:[4026531832]>, 0)     = 0
102   sendmmsg(3, [{msg_hdr={msg_name={sa_family=AF_INET, sin_port=htons(7), sin_addr=inet_addr("10.20.0.3")}, msg_namelen=16}, msg_len=8}, {msg_hdr={msg_name={sa_family=AF_INET, sin_port=htons(7), sin_addr=inet_addr("10.10.0.4")}, msg_namelen=16}, msg_len=8}], 2, 0) = 2
102   clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD, child_tid=0x7f} => {parent_tid=[103]}, 88) = 103
103   sendto(6, "t", 1, 0, {sa_family=AF_INET, sin_port=htons(9), sin_addr=inet_addr("10.10.0.9")}, 16) = 1
102   setns(5<net:[4026531833]>, CLONE_NEWNET) = 0
102   sendto(3, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(9), sin_addr=inet_addr("10.10.0.1")}, 16) = 1
100   connect(7, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("192.0.2.53")}, 16) = -1 ENETUNREACH (Network is unreachable)
100   sendto(4, "x", 1, 0, {sa_family=AF_INET6, sin6_port=htons(9), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 1
100   sendto(4, "x", 1, 0, {sa_family=AF_INET6, sin6_port=htons(9), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6_addr), sin6_scope_id=0}, 28) = 1
100   sendto(4, "x", 1, 0, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = 1
100   sendto(8, "\\x01", 60, 0, {sa_family=AF_PACKET, sll_protocol=htons(ETH_P_ALL), sll_ifindex=if_nametoindex("eth0"), sll_hatype=ARPHRD_NETROM, sll_pkttype=PACKET_HOST, sll_halen=0}, 20) = 60
100   sendto(8, "\\x01", 60, 0, {sa_family=AF_PACKET, sll_protocol=htons(ETH_P_ALL), sll_ifindex=if_nametoindex("vcys0p1"), sll_hatype=ARPHRD_NETROM, sll_pkttype=PACKET_HOST, sll_halen=0}, 20) = 60
100   bind(9, {sa_family=AF_INET, sin_port=htons(6653), sin_addr=inet_addr("127.0.0.1")}, 16) = 0
100   bind(10, {sa_family=AF_INET, sin_port=htons(3260), sin_addr=inet_addr("0.0.0.0")}, 16) = 0
101   bind(11, {sa_family=AF_INET, sin_port=htons(0), sin_addr=inet_addr("10.10.0.1")}, 16) = 0
104   ip netns exec: nothing here parses
104   setns(5</run/netns/vcyq>, CLONE_NEWNET) = 0
104   sendto(3, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(9), sin_addr=inet_addr("10.20.0.7")}, 16) = 1
100   +++ exited with 0 +++
"""


def by_address(sends):
    return {s.address: s for s in sends}


def test_follows_namespaces_through_forks_unshare_setns_and_threads():
    sends, _ = parse_trace(TRACE, ROOT_NS)
    got = [(s.pid, s.syscall, s.address, s.netns) for s in sends]
    assert got[:5] == [
        (100, "sendto", "127.0.0.1", ROOT),
        (101, "connect", "10.20.0.2", "new(101)"),          # child of an unfinished vfork
        (102, "sendmmsg", "10.20.0.3", "net:[4026533336]"),  # mnexec -a: setns by /proc fd
        (102, "sendmmsg", "10.10.0.4", "net:[4026533336]"),  # every message of a sendmmsg
        (103, "sendto", "10.10.0.9", "net:[4026533336]"),    # a thread inherits its creator's
    ]
    s = by_address(sends)
    assert s["10.10.0.1"].netns == ROOT         # setns back to the root namespace
    assert s["10.20.0.7"].netns == "netns vcyq"  # ip netns exec
    assert s["vcys0p1"].family == "packet" and s["eth0"].netns == ROOT
    assert s["192.0.2.53"].result.startswith("-1 ENETUNREACH")
    assert s["10.20.0.2"].line == 5  # the line where the call started


def test_leaks_name_each_way_out():
    sends, _ = parse_trace(TRACE, ROOT_NS)
    found = {s.address: why for s, why in leaks(sends, SUBNETS, lab_links="vcy")}
    assert found == {
        "10.10.0.1": "a lab address, but sent from the root namespace",
        "192.0.2.53": "outside the lab's subnets and loopback",  # an attempt counts
        "2001:db8::1": "outside the lab's subnets and loopback",
        "eth0": "raw frames on a root-namespace interface that is not the lab's",
    }


def test_a_clean_trace_has_no_leaks():
    text = "\n".join(line for line in TRACE.splitlines()
                     if not any(bad in line for bad in ("192.0.2", "2001:db8", "eth0", '"10.10.0.1"')))
    sends, _ = parse_trace(text, ROOT_NS)
    assert len(sends) >= 8 and leaks(sends, SUBNETS, lab_links="vcy") == []


def test_binds_in_the_root_namespace_beyond_loopback_are_exposed():
    _, binds = parse_trace(TRACE, ROOT_NS)
    assert [(b.address, b.port) for b in binds] == [("127.0.0.1", 6653), ("0.0.0.0", 3260),
                                                    ("10.10.0.1", 0)]
    assert [(b.address, b.port) for b in exposed(binds)] == [("0.0.0.0", 3260)]


def test_clone_with_a_new_network_namespace_and_unfinished_calls_left_open():
    text = ("200   clone(child_stack=NULL, flags=CLONE_NEWNET|SIGCHLD) = 201\n"
            '201   sendto(3, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(9), sin_addr=inet_addr("10.20.0.1")}, 16) = 1\n'
            "200   connect(4, {sa_family=AF_INET, sin_port=htons(9), sin_addr=inet_addr(\"8.8.8.8\")}, 16 <unfinished ...>\n"
            "200   +++ killed by SIGKILL +++\n")
    sends, _ = parse_trace(text, ROOT_NS)
    assert [(s.address, s.netns) for s in sends] == [("10.20.0.1", "new(201)")]


def test_addresses_keep_their_order():
    args = ('3, [{msg_hdr={msg_name={sa_family=AF_INET6, sin6_port=htons(1), sin6_flowinfo=htonl(0), '
            'inet_pton(AF_INET6, "fe80::1", &sin6_addr), sin6_scope_id=if_nametoindex("eth0")}}}, '
            '{msg_hdr={msg_name={sa_family=AF_INET, sin_port=htons(2), sin_addr=inet_addr("10.0.0.1")}}}]')
    assert addresses(args) == [("inet6", "fe80::1", 1), ("inet", "10.0.0.1", 2)]
