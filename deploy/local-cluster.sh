#!/usr/bin/env bash
# local-cluster.sh: a condamesh cluster of N nodes on this machine (127.0.0.1),
# each with its own ports, data directory, log and PID file, for trying the
# cluster out and for the e2e tests (e2e/localcluster_test.go runs it).
#
#   deploy/local-cluster.sh start N [--dir DIR] [--base-port P] [--sites a,b,c] [--bin PATH]
#                                   [--ready-timeout SECONDS]
#   deploy/local-cluster.sh stop    [--dir DIR] [--stop-timeout SECONDS]
#   deploy/local-cluster.sh status  [--dir DIR]
#
# Node i (1..N) listens on HTTP P+10(i-1), Raft P+10(i-1)+1, gossip
# P+10(i-1)+2 and keeps its data in DIR/node<i>, its output in DIR/node<i>.log,
# its PID in DIR/node<i>.pid and its URL in DIR/node<i>.url. Node 1 starts
# first and bootstraps the cluster; the admin API key it prints once goes to
# DIR/admin-key. Its API key secret (node1/api-key-secret) is copied into
# every other node's data directory before that node starts: all nodes of a
# cluster need the same one. Nodes 2..N start with --join <node 1's gossip
# address>. --sites a,b,c gives node i the site of its turn in that list
# (node 4 of 6 with a,b,c is in a). Without --bin the script builds the
# binary from this source tree into DIR/condamesh.
#
# A node whose data directory is not new is restarted without --join: it
# rejoins the cluster it belongs to by itself.
#
# stop sends SIGTERM to every node (N first, node 1 last), waits up to
# --stop-timeout seconds for each to exit, then sends SIGKILL. status prints
# each node and whether it runs; it exits 0 only if every node runs.
#
# Exit status: 0 done, 1 failure (the message says which node and where its
# log is; nodes this run started are stopped again), 2 usage error.

set -euo pipefail

DEFAULT_DIR="${TMPDIR:-/tmp}/condamesh-local-cluster"
DEFAULT_BASE_PORT=18000
DEFAULT_READY_TIMEOUT=60
DEFAULT_STOP_TIMEOUT=30

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC_DIR="$(dirname "$SCRIPT_DIR")"

usage() {
	cat <<EOF
usage: $0 start N [--dir DIR] [--base-port P] [--sites a,b,c] [--bin PATH] [--ready-timeout SECONDS]
       $0 stop    [--dir DIR] [--stop-timeout SECONDS]
       $0 status  [--dir DIR]
defaults: --dir $DEFAULT_DIR, --base-port $DEFAULT_BASE_PORT, --ready-timeout $DEFAULT_READY_TIMEOUT, --stop-timeout $DEFAULT_STOP_TIMEOUT
EOF
}

die() {
	echo "local-cluster: $*" >&2
	exit 1
}

usage_error() {
	echo "local-cluster: $*" >&2
	usage >&2
	exit 2
}

is_uint() {
	[[ $1 =~ ^[0-9]+$ ]]
}

# alive PID: true while PID is a process that has not exited (a zombie
# nobody has reaped yet counts as exited).
alive() {
	local stat
	kill -0 "$1" 2>/dev/null || return 1
	stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ $stat != Z* ]]
}

# running I: true if the PID in DIR/node<I>.pid is a live node I (a serve
# process on DIR/node<I>, not another program that got the PID since).
running() {
	local pidfile="$DIR/node$1.pid" pid
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile")
	is_uint "$pid" || return 1
	alive "$pid" || return 1
	ps -ww -o args= -p "$pid" 2>/dev/null | grep -qF -- " serve --data-dir $DIR/node$1 "
}

# resolve_dir: DIR as an absolute path (PID checks match on it).
resolve_dir() {
	[[ -d $DIR ]] || die "no cluster directory $DIR"
	DIR=$(cd "$DIR" && pwd)
}

# port_busy PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

http_ok() {
	curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
}

# stop_node I TIMEOUT: SIGTERM, wait, SIGKILL; removes the PID file.
stop_node() {
	local i=$1 timeout=$2 pidfile pid waited=0
	pidfile="$DIR/node$i.pid"
	if ! running "$i"; then
		rm -f "$pidfile"
		return 0
	fi
	pid=$(<"$pidfile")
	kill -TERM "$pid" 2>/dev/null || true
	while alive "$pid"; do
		if ((waited >= timeout * 10)); then
			echo "node$i (pid $pid) still running after ${timeout}s: SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
		waited=$((waited + 1))
	done
	# SIGKILL is not ignored: wait until the process is gone.
	while alive "$pid"; do sleep 0.1; done
	rm -f "$pidfile"
	echo "node$i stopped (pid $pid)"
}

# node_numbers: the numbers of the nodes that have a PID or URL file, sorted.
node_numbers() {
	local f n
	for f in "$DIR"/node*.pid "$DIR"/node*.url; do
		[[ -e $f ]] || continue
		n=${f##*/node}
		n=${n%.*}
		is_uint "$n" && echo "$n"
	done | sort -n -u
}

STARTED=()

# On a failed start, stop what this run started: no stray processes.
cleanup_started() {
	local i
	for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
		stop_node "${STARTED[i]}" "$DEFAULT_STOP_TIMEOUT" >&2 || true
	done
}

fail_start() {
	local i=$1
	shift
	echo "local-cluster: node$i: $*" >&2
	if [[ -f $DIR/node$i.log ]]; then
		echo "--- last lines of $DIR/node$i.log:" >&2
		tail -n 20 "$DIR/node$i.log" >&2
		echo "---" >&2
	fi
	cleanup_started
	exit 1
}

cmd_start() {
	local n="" base_port=$DEFAULT_BASE_PORT sites="" bin="" ready_timeout=$DEFAULT_READY_TIMEOUT
	while (($#)); do
		case $1 in
		--dir) DIR=${2:?--dir needs a value}; shift 2 ;;
		--base-port) base_port=${2:?--base-port needs a value}; shift 2 ;;
		--sites) sites=${2:?--sites needs a value}; shift 2 ;;
		--bin) bin=${2:?--bin needs a value}; shift 2 ;;
		--ready-timeout) ready_timeout=${2:?--ready-timeout needs a value}; shift 2 ;;
		-*) usage_error "start: unknown option $1" ;;
		*)
			[[ -z $n ]] || usage_error "start: one node count, got $n and $1"
			n=$1
			shift
			;;
		esac
	done
	[[ -n $n ]] || usage_error "start: how many nodes?"
	if ! is_uint "$n" || ((n < 1)); then
		usage_error "start: node count $n: want a number from 1"
	fi
	if ! is_uint "$base_port" || ((base_port < 1024 || base_port + 10 * (n - 1) + 2 > 65535)); then
		usage_error "--base-port $base_port: want a port from 1024 such that $n nodes' ports (up to base + $((10 * (n - 1) + 2))) stay below 65536"
	fi
	if ! is_uint "$ready_timeout" || ((ready_timeout < 1)); then
		usage_error "--ready-timeout $ready_timeout: want whole seconds"
	fi
	local -a site_list=()
	if [[ -n $sites ]]; then
		IFS=, read -r -a site_list <<<"$sites"
		local s
		for s in "${site_list[@]}"; do
			[[ $s =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || usage_error "--sites: bad site name '$s'"
		done
	fi
	command -v curl >/dev/null || die "curl is needed (readiness checks)"

	mkdir -p "$DIR"
	resolve_dir
	local i
	for ((i = 1; i <= n; i++)); do
		if running "$i"; then
			die "node$i already runs (pid $(<"$DIR/node$i.pid")); stop the cluster first: $0 stop --dir $DIR"
		fi
	done

	if [[ -z $bin ]]; then
		[[ -f $SRC_DIR/go.mod && -d $SRC_DIR/cmd/condamesh ]] || die "no --bin given and no source tree at $SRC_DIR to build one from"
		command -v go >/dev/null || die "no --bin given and no go to build one"
		bin="$DIR/condamesh"
		echo "building $bin"
		(cd "$SRC_DIR" && go build -o "$bin" ./cmd/condamesh) || die "go build failed"
	fi
	[[ -x $bin ]] || die "--bin $bin: not an executable file"
	bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

	local http raft gossip datadir site url id p
	local join_addr="127.0.0.1:$((base_port + 2))"
	trap 'cleanup_started; exit 130' INT TERM
	for ((i = 1; i <= n; i++)); do
		http=$((base_port + 10 * (i - 1)))
		raft=$((http + 1))
		gossip=$((http + 2))
		for p in "$http" "$raft" "$gossip"; do
			if port_busy "$p"; then
				fail_start "$i" "port $p is in use (choose another --base-port)"
			fi
		done
		datadir="$DIR/node$i"
		local fresh=1
		if [[ -d $datadir ]] && [[ -n $(ls -A "$datadir") ]]; then
			# api-key-secret alone (copied by an earlier, failed run) is still new.
			[[ $(ls -A "$datadir") == api-key-secret ]] || fresh=0
		fi
		mkdir -p "$datadir"
		local -a args=(serve --data-dir "$datadir")
		args+=(--http-addr "127.0.0.1:$http" --raft-addr "127.0.0.1:$raft" --gossip-addr "127.0.0.1:$gossip")
		site=""
		if ((${#site_list[@]})); then
			site=${site_list[(i - 1) % ${#site_list[@]}]}
			args+=(--site "$site")
		fi
		if ((i > 1)); then
			if [[ ! -f $datadir/api-key-secret ]]; then
				[[ -f $DIR/node1/api-key-secret ]] || fail_start "$i" "node1 has no api-key-secret to copy"
				(umask 077 && cp "$DIR/node1/api-key-secret" "$datadir/api-key-secret")
			elif ! cmp -s "$DIR/node1/api-key-secret" "$datadir/api-key-secret"; then
				fail_start "$i" "$datadir/api-key-secret differs from node1's: every node needs the same one"
			fi
			if ((fresh)); then
				args+=(--join "$join_addr")
			fi
		fi
		url="http://127.0.0.1:$http"
		echo "$url" >"$DIR/node$i.url"
		: >"$DIR/node$i.log"
		nohup "$bin" "${args[@]}" </dev/null >>"$DIR/node$i.log" 2>&1 &
		echo $! >"$DIR/node$i.pid"
		STARTED+=("$i")

		# Ready: /health/ready answers 200 and serve has printed its banner
		# (after the admin key, on a first start).
		local deadline=$((SECONDS + ready_timeout))
		until http_ok "$url/health/ready" && grep -q 'condamesh serving on' "$DIR/node$i.log"; do
			running "$i" || fail_start "$i" "exited before it was ready"
			((SECONDS < deadline)) || fail_start "$i" "not ready after ${ready_timeout}s ($url/health/ready)"
			sleep 0.2
		done
		if ((i == 1)); then
			local key
			key=$(awk '/shown only now/ {found = 1; next} found && /^    [^ ]+$/ {print $1; exit}' "$DIR/node1.log")
			if [[ -n $key ]]; then
				(umask 077 && echo "$key" >"$DIR/admin-key")
			elif [[ ! -f $DIR/admin-key ]]; then
				echo "local-cluster: node1 printed no admin key (not a first start) and $DIR/admin-key does not exist" >&2
			fi
		fi
		id=$(cat "$datadir/node-id" 2>/dev/null || echo "?")
		printf 'node%-3s %-24s %-24s %s pid %s\n' "$i" "$id" "$url" "${site:+site $site}" "$(<"$DIR/node$i.pid")"
	done
	trap - INT TERM
	echo "$n node(s) running in $DIR (logs node<i>.log); admin API key in $DIR/admin-key"
	echo "  $bin node list --server http://127.0.0.1:$base_port --api-key \"\$(cat $DIR/admin-key)\""
	echo "  $0 stop --dir $DIR"
}

cmd_stop() {
	local timeout=$DEFAULT_STOP_TIMEOUT
	while (($#)); do
		case $1 in
		--dir) DIR=${2:?--dir needs a value}; shift 2 ;;
		--stop-timeout) timeout=${2:?--stop-timeout needs a value}; shift 2 ;;
		*) usage_error "stop: unknown argument $1" ;;
		esac
	done
	is_uint "$timeout" || usage_error "--stop-timeout $timeout: want whole seconds"
	resolve_dir
	local -a nodes
	mapfile -t nodes < <(node_numbers)
	((${#nodes[@]})) || die "no nodes in $DIR"
	local k
	for ((k = ${#nodes[@]} - 1; k >= 0; k--)); do
		stop_node "${nodes[k]}" "$timeout"
	done
}

cmd_status() {
	while (($#)); do
		case $1 in
		--dir) DIR=${2:?--dir needs a value}; shift 2 ;;
		*) usage_error "status: unknown argument $1" ;;
		esac
	done
	resolve_dir
	local -a nodes
	mapfile -t nodes < <(node_numbers)
	((${#nodes[@]})) || die "no nodes in $DIR"
	local i url state all=0
	for i in "${nodes[@]}"; do
		url=$(cat "$DIR/node$i.url" 2>/dev/null || echo "?")
		if running "$i"; then
			state="running (pid $(<"$DIR/node$i.pid"))"
			if http_ok "$url/health/ready"; then
				state+=", ready"
			else
				state+=", not ready"
			fi
		else
			state="stopped"
			all=1
		fi
		printf 'node%-3s %-24s %s\n' "$i" "$url" "$state"
	done
	return "$all"
}

DIR=$DEFAULT_DIR
(($#)) || usage_error "no command"
command=$1
shift
case $command in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
status) cmd_status "$@" ;;
-h | --help | help) usage ;;
*) usage_error "unknown command $command" ;;
esac
