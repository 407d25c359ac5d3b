#!/usr/bin/env bash
# What the make targets need on the machine: one table, each row checked on its own.
#
#   prereqs.sh deps [gateway|run|test]   installs what that target misses (all of them without
#       an argument): Debian packages with apt-get when root, cargo-nextest with cargo install.
#       When it cannot (not root, no apt-get, RG_DEPS_INSTALL=0, or Rust itself is missing) it
#       installs nothing, prints one line per missing item with the command that installs it,
#       and exits 1, so `make run`/`make test` stop before the build, not twenty minutes into it.
#   prereqs.sh doctor   prints each prerequisite, its version, and whether `make gateway`,
#       `make run` and `make test` will work; changes nothing; exits 1 if one of them will not.
#
# Only bash builtins are used here (no coreutils), so the answers stay right on a bare PATH.
set -uo pipefail
if [[ $0 == */* ]]; then cd "${0%/*}/.." || exit 2; fi

have() { command -v "$1" >/dev/null 2>&1; }

# The build targets x86-64-v3 (.cargo/config.toml): without AVX2 the binary dies on SIGILL.
cpu_ok() {
  [[ $HOSTTYPE == x86_64 && -f .cargo/config.toml && $(<.cargo/config.toml) == *x86-64-v3* ]] ||
    return 0
  [[ $(</proc/cpuinfo) =~ [[:space:]]avx2[[:space:]] ]]
}
cpu_version() {
  if cpu_ok; then echo "$HOSTTYPE, builds for x86-64-v3: AVX2 present"; else echo "$HOSTTYPE, no AVX2"; fi
}

NAMES=() NEEDS=() CHECKS=() VERSIONS=() INSTALLS=()
# row NAME NEEDED-BY CHECK VERSION INSTALL
#   NEEDED-BY: the make targets that fail without it. INSTALL: `apt PACKAGE` (apt-get),
#   `cargo CRATE` (cargo install --locked), or `manual TEXT` (make deps cannot do it).
row() { NAMES+=("$1") NEEDS+=("$2") CHECKS+=("$3") VERSIONS+=("$4") INSTALLS+=("$5"); }

#   name          needed by          check                          version                   install
row git           "gateway run test" "have git"                     "git --version"           "apt git"
row make          "gateway run test" "have make"                    "make --version"          "apt make"
row cargo         "gateway run test" "have cargo && have rustc"     "cargo --version"         "manual curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh   (rustup; make deps does not install Rust)"
row cc            "gateway run test" "have cc && have c++"          "cc --version"            "apt build-essential"
row cmake         "gateway run test" "have cmake"                   "cmake --version"         "apt cmake"
row pkg-config    "gateway run test" "have pkg-config"              "pkg-config --version"    "apt pkg-config"
row avx2          "gateway run test" "cpu_ok"                       "cpu_version"             "manual remove .cargo/config.toml (it builds for x86-64-v3, which needs AVX2)"
row curl          "run test"         "have curl"                    "curl --version"          "apt curl"
row python3       "run test"         "have python3"                 "python3 --version"       "apt python3"
row python3-venv  "run test"         "python3 -c 'import ensurepip'" "python3 -c 'import ensurepip; print(\"venv, bundles pip\", ensurepip.version())'" "apt python3-venv"
row pip           "run test"         "python3 -c 'import pip'"      "python3 -c 'import pip; print(\"pip\", pip.__version__)'" "apt python3-pip"
row promtool      "test"             "have promtool"                "promtool --version"      "apt prometheus"
row prometheus    "test"             "have prometheus"              "prometheus --version"    "apt prometheus"
row redis-server  "test"             "have redis-server"            "redis-server --version"  "apt redis-server"
row cargo-nextest "test"             "cargo nextest --version"      "cargo nextest --version" "cargo cargo-nextest"
# tests/tests/deploy.rs renders deploy/kubernetes with kubectl's built-in kustomize. Debian has no
# kubectl package, and no registry this project uses ships it: make deps can only say how.
row kubectl       "test"             "have kubectl"                 "kubectl version --client" "manual curl -fsSLo /usr/local/bin/kubectl https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubectl && chmod +x /usr/local/bin/kubectl   (or your distribution's kubectl >= 1.27)"

TARGETS=(gateway run test)

# Each check runs once (STATE caches it; deps clears it after installing).
STATE=()
present() {
  if [[ -z ${STATE[$1]:-} ]]; then
    if eval "${CHECKS[$1]}" >/dev/null 2>&1; then STATE[$1]=1; else STATE[$1]=0; fi
  fi
  [[ ${STATE[$1]} == 1 ]]
}
needed_by() { [[ $2 == all || " ${NEEDS[$1]} " == *" $2 "* ]]; }
kind() { echo "${INSTALLS[$1]%% *}"; }
arg() { echo "${INSTALLS[$1]#* }"; }

# The command that installs row $1, as a user would type it here.
install_cmd() {
  local sudo=
  [[ $EUID -ne 0 ]] && sudo="sudo "
  case $(kind "$1") in
    apt) echo "${sudo}apt-get install -y $(arg "$1")" ;;
    cargo) echo "cargo install --locked $(arg "$1")" ;;
    *) arg "$1" ;;
  esac
}

# Why make deps cannot install row $1 here, or nothing when it can.
why_not() {
  if [[ ${RG_DEPS_INSTALL:-1} == 0 ]]; then echo "RG_DEPS_INSTALL=0"; return; fi
  case $(kind "$1") in
    apt)
      if [[ $EUID -ne 0 ]]; then echo "not root"
      elif ! have apt-get; then echo "no apt-get"; fi ;;
    cargo) have cargo || echo "no cargo" ;;
    *) echo "not installable by make deps" ;;
  esac
}

version() {
  local out
  out=$(eval "${VERSIONS[$1]}" 2>&1) || true
  out=${out%%$'\n'*}
  echo "${out:0:72}"
}

# missing SCOPE: fills MISSING with the rows SCOPE needs that are absent.
missing() {
  MISSING=()
  local i
  for i in "${!NAMES[@]}"; do
    needed_by "$i" "$1" && ! present "$i" && MISSING+=("$i")
  done
}

# One line per missing row: its name, the command that installs it, and why make deps did not.
report() {
  local i why
  for i in "${MISSING[@]}"; do
    why=$(why_not "$i")
    [[ $(kind "$i") == manual ]] && why=
    printf '  %-14s missing; install: %s%s\n' "${NAMES[$i]}" "$(install_cmd "$i")" "${why:+   [not by make deps here: $why]}"
  done
}

deps() {
  local scope=${1:-all} i blocked=() apt_pkgs=() crates=()
  missing "$scope"
  ((${#MISSING[@]} == 0)) && return 0
  for i in "${MISSING[@]}"; do
    [[ -n $(why_not "$i") ]] && blocked+=("${NAMES[$i]}")
  done
  if ((${#blocked[@]})); then
    echo "make deps: missing prerequisites, nothing installed (run these commands, then make again):"
    report
    return 1
  fi
  for i in "${MISSING[@]}"; do
    case $(kind "$i") in
      apt) [[ " ${apt_pkgs[*]} " == *" $(arg "$i") "* ]] || apt_pkgs+=("$(arg "$i")") ;;
      cargo) crates+=("$(arg "$i")") ;;
    esac
  done
  if ((${#apt_pkgs[@]})); then
    echo "make deps: installing ${apt_pkgs[*]} (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}"
  fi
  for i in "${crates[@]}"; do
    echo "make deps: installing $i (cargo install --locked $i; a few minutes)"
    cargo install --locked "$i"
  done
  STATE=()
  missing "$scope"
  if ((${#MISSING[@]})); then
    echo "make deps: still missing after installing:"
    report
    return 1
  fi
}

doctor() {
  local i t line status=0 fixable blocked
  printf '%-14s %-17s %-8s %s\n' prerequisite "needed by" status "version, or the command that installs it"
  for i in "${!NAMES[@]}"; do
    if present "$i"; then
      printf '%-14s %-17s %-8s %s\n' "${NAMES[$i]}" "${NEEDS[$i]}" ok "$(version "$i")"
    else
      printf '%-14s %-17s %-8s %s\n' "${NAMES[$i]}" "${NEEDS[$i]}" missing "$(install_cmd "$i")"
    fi
  done
  echo
  for t in "${TARGETS[@]}"; do
    missing "$t"
    fixable=() blocked=()
    for i in "${MISSING[@]}"; do
      if [[ -n $(why_not "$i") ]]; then blocked+=("${NAMES[$i]}"); else fixable+=("${NAMES[$i]}"); fi
    done
    line="make $t:"
    if ((${#blocked[@]})); then
      echo "$line will NOT work: make deps stops before the build, missing ${blocked[*]}${fixable[*]:+ ${fixable[*]}}"
      status=1
    elif ((${#fixable[@]})); then
      echo "$line will work: make deps installs ${fixable[*]} first"
    else
      echo "$line will work"
    fi
  done
  return $status
}

case ${1:-} in
  deps) deps "${2:-all}" ;;
  doctor) doctor ;;
  *) echo "usage: $0 deps [gateway|run|test] | doctor" >&2; exit 2 ;;
esac
