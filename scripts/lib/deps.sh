# deps.sh: what the scripts need from the system, and installing it.
# Source it (bash), then:
#
#   deps_require_go SCRIPT
#       exits with a clear message if there is no go command.
#   deps_install SCRIPT COMMAND:PACKAGE ...
#       for each COMMAND not found in PATH, installs PACKAGE with apt-get
#       when run as root (each package once, quietly, updating the package
#       lists only if the first try fails). It sets DEPS_MISSING to the
#       packages still missing afterwards and returns 1 if there are any:
#       not root, no apt-get, or the install failed (the reason is printed,
#       prefixed with SCRIPT, except for "not root": the caller says what
#       it does without them).

deps_require_go() {
	command -v go >/dev/null 2>&1 && return 0
	echo "$1: needs Go 1.26 or newer: no go command in PATH (https://go.dev/dl/)" >&2
	exit 1
}

deps_install() {
	local script=$1
	shift
	_deps_missing "$@"
	[ -n "$DEPS_MISSING" ] || return 0
	[ "$(id -u)" = 0 ] || return 1
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "$script: missing $DEPS_MISSING, and there is no apt-get to install them with" >&2
		return 1
	fi
	local -a pkgs
	read -r -a pkgs <<<"$DEPS_MISSING"
	echo "$script: installing $DEPS_MISSING" >&2
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null 2>&1; then
		apt-get update -qq >/dev/null 2>&1 || true
		if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; then
			echo "$script: could not install $DEPS_MISSING" >&2
			return 1
		fi
	fi
	hash -r
	_deps_missing "$@"
	if [ -n "$DEPS_MISSING" ]; then
		echo "$script: installed, but still missing commands from $DEPS_MISSING" >&2
		return 1
	fi
	return 0
}

# _deps_missing sets DEPS_MISSING to the packages, each once, whose
# command is not in PATH.
_deps_missing() {
	local pair cmd pkg
	DEPS_MISSING=
	for pair in "$@"; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null 2>&1 && continue
		case " $DEPS_MISSING " in *" $pkg "*) continue ;; esac
		DEPS_MISSING=${DEPS_MISSING:+$DEPS_MISSING }$pkg
	done
}
