#!/usr/bin/env bash
# Runs a command as two MPI ranks on two simulated nodes: two network namespaces of this machine joined by a veth
# pair, Open MPI launching and communicating over TCP only, as it does between two hosts. (A real cluster differs in
# the launcher: ssh instead of `ip netns exec`, and real host names in the hostfile.) Needs root and iproute2.
#   usage: scripts/two_node_mpirun.sh COMMAND [ARGUMENTS...]   (exit status 2 or 3: no root, or no namespaces here)
#   e.g.   scripts/two_node_mpirun.sh .build/release/gpt train --data DIR --out OUT ...
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARGUMENTS...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: network namespaces need root" >&2; exit 2; }
command -v ip > /dev/null || { echo "$0: needs iproute2's ip (apt-get install iproute2)" >&2; exit 3; }
id=$$
node1=swiftgpt-$id-node1 node2=swiftgpt-$id-node2
work=$(mktemp -d)
cleanup() { ip netns del "$node1" 2> /dev/null || true; ip netns del "$node2" 2> /dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

if ! ip netns add "$node1" || ! ip netns add "$node2"; then
    echo "$0: cannot create network namespaces on this machine" >&2
    exit 3
fi
ip link add "sg${id}a" type veth peer name "sg${id}b"
ip link set "sg${id}a" netns "$node1"
ip link set "sg${id}b" netns "$node2"
ip -n "$node1" addr add 10.231.0.1/24 dev "sg${id}a"
ip -n "$node2" addr add 10.231.0.2/24 dev "sg${id}b"
for node in "$node1" "$node2"; do ip -n "$node" link set lo up; done
ip -n "$node1" link set "sg${id}a" up
ip -n "$node2" link set "sg${id}b" up

# The hostfile names the nodes by address; the launcher Open MPI uses in place of ssh enters the node's namespace.
printf '10.231.0.1 slots=1\n10.231.0.2 slots=1\n' > "$work/hostfile"
cat > "$work/launch" <<AGENT
#!/bin/sh
host=\$1; shift
case "\$host" in
    10.231.0.1) node=$node1 ;;
    10.231.0.2) node=$node2 ;;
    *) echo "no node \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$node" sh -c "\$*"
AGENT
chmod +x "$work/launch"

ip netns exec "$node1" mpirun --allow-run-as-root --hostfile "$work/hostfile" -np 2 \
    --mca plm_rsh_agent "$work/launch" --mca btl tcp,self \
    --mca btl_tcp_if_include 10.231.0.0/24 --mca oob_tcp_if_include 10.231.0.0/24 \
    -x SWIFTGPT_THREADS=1 "$@"
