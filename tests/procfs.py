"""What /proc says about processes this test started: their children, and where they listen."""
import ipaddress
import os
from pathlib import Path


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found |= {int(p) for p in text.split()}
    return found


def listening_addresses(root_pid: int) -> set[str]:
    """Local addresses of the TCP sockets listening in `root_pid` and all its descendants."""
    pids, frontier = set(), {root_pid}
    while frontier:
        pids |= frontier
        frontier = set().union(*(children(p) for p in frontier)) - pids
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    addresses = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                # /proc prints each 32-bit word of the address in host (little-endian) byte order
                addresses.add(str(ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4)))))
    return addresses


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def ctrl_c_delivered() -> None:
    """A subprocess's `preexec_fn`: SIGINT back to its default, so Python installs its Ctrl-C handler. A shell
    that starts a job in the background without job control makes it ignore SIGINT, and the children of such
    a run (the suite started with `&` from a script) inherit that; the Ctrl-C tests then test nothing."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
