# Shared setup of the side-by-side scripts in bench/ (sourced, not run): where things are, which rbuild
# binary (RBUILD; default target/release/rbuild, else target/debug/rbuild), the lab's dockerd for BuildKit.
HERE=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
REPO=$(dirname "$HERE")
LAB=${LAB:-$(cd "$REPO/../shared/lab" 2>/dev/null && pwd || echo /work/shared/lab)}
RBUILD=${RBUILD:-$REPO/target/release/rbuild}
[ -x "$RBUILD" ] || RBUILD=$REPO/target/debug/rbuild
export DOCKER_HOST=unix:///tmp/lab/docker.sock DOCKER_BUILDKIT=1

# Median of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
