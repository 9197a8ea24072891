#!/usr/bin/env bash
# Build a signed, offline release bundle of DermGate: one file, dermgate-<version>.tar.
#
#   scripts/make-bundle.sh --key KEY [--out DIR] [--source DIR] [--version V]
#                          [--platform P --python-version X.Y --abi cpXY] [--extra-wheels DIR]
#
# KEY is the ssh-keygen private key of the release signer (or $DERMGATE_SIGNING_KEY);
# keep it off the boxes. Without --platform the wheels are for this machine's Python
# and CPU (tests, or building on a Pi). For a Raspberry Pi OS Bookworm box from a PC:
#   --platform manylinux2014_aarch64 --python-version 3.11 --abi cp311
# then only binary wheels are taken; a dependency published as source only (evdev) must
# be built on an arm64 machine (a Pi, or an arm64 chroot under qemu) and given with
# --extra-wheels DIR.
#
# The bundle (see gateway/update/bundle.py): wheels/ (DermGate and every dependency),
# requirements.lock (name==version --hash=sha256:…), dermgate-update.pyz (the updater,
# standard library only), install.sh, image/ and README.md, manifest.json with every file's
# SHA-256, and manifest.json.sig (ssh-keygen -Y sign -n dermgate-release).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
src="$here" out="$PWD" version="" key="${DERMGATE_SIGNING_KEY:-}"
python="${PYTHON:-python3}" extra="" cross=()
while (($#)); do
  case "$1" in
    --key) key="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --source) src="$(cd "$2" && pwd)"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --platform) cross+=(--platform "$2"); shift 2 ;;
    --python-version) cross+=(--python-version "$2"); shift 2 ;;
    --abi) cross+=(--abi "$2" --implementation cp); shift 2 ;;
    --extra-wheels) extra="$(cd "$2" && pwd)"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "make-bundle: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$key" && -f "$key" ]] || { echo "make-bundle: --key KEY (the signing key) is required" >&2; exit 2; }
mkdir -p "$out"; out="$(cd "$out" && pwd)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. A clean copy of the source (committed and untracked files, not the venv).
mkdir "$work/src"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$src" ls-files -z --cached --others --exclude-standard \
    | (cd "$src" && tar --null -T - -cf -) | tar -xf - -C "$work/src"
else
  tar -C "$src" --exclude=./.venv --exclude=./.git --exclude='*.egg-info' \
    --exclude=./build --exclude=__pycache__ -cf - . | tar -xf - -C "$work/src"
fi
if [[ -n "$version" ]]; then
  sed -i "s/^version = \".*\"/version = \"$version\"/" "$work/src/pyproject.toml"
fi

# 2. DermGate's wheel, then every dependency for the target.
"$python" -m pip wheel --quiet --no-deps -w "$work/own" "$work/src"
own=("$work"/own/dermgate-*.whl)
bundle_version="$(basename "${own[0]}" | cut -d- -f2)"
top="$work/dermgate-$bundle_version"
mkdir -p "$top/wheels"
cp "${own[0]}" "$top/wheels/"
find_links=()
[[ -n "$extra" ]] && find_links=(--find-links "$extra")
if ((${#cross[@]})); then
  "$python" -m pip download --quiet --only-binary=:all: "${cross[@]}" "${find_links[@]}" \
    -d "$top/wheels" "${own[0]}"
else
  "$python" -m pip wheel --quiet --prefer-binary "${find_links[@]}" -w "$top/wheels" "${own[0]}"
fi

# 3. The updater (a zipapp run by the system's python3, outside every release).
mkdir -p "$work/pyz/gateway/update"
cp "$work/src"/gateway/update/*.py "$work/pyz/gateway/update/"
echo '"""DermGate (only the updater, in dermgate-update.pyz)."""' > "$work/pyz/gateway/__init__.py"
"$python" -m zipapp "$work/pyz" -m gateway.update.cli:main -p '/usr/bin/python3 -I' \
  -o "$top/dermgate-update.pyz"

# 4. The installer and what it installs.
cp "$work/src/image/install.sh" "$top/install.sh"
cp "$work/src/README.md" "$top/README.md"
mkdir "$top/image"
cp "$work/src"/image/* "$top/image/"
rm -f "$top/image/install.sh"

# 5. requirements.lock and the manifest, then the signature.
"$python" - "$top" "$bundle_version" <<'EOF'
import hashlib, json, sys
from pathlib import Path

top, version = Path(sys.argv[1]), sys.argv[2]
def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()
lines = []
for wheel in sorted((top / "wheels").glob("*.whl")):
    name, ver = wheel.name.split("-")[:2]
    lines.append(f"{name}=={ver} --hash=sha256:{sha(wheel)}")
(top / "requirements.lock").write_text("\n".join(lines) + "\n")
files = {
    p.relative_to(top).as_posix(): sha(p)
    for p in sorted(top.rglob("*")) if p.is_file()
}
manifest = {"format": 1, "name": "dermgate", "version": version, "files": files}
(top / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
EOF
ssh-keygen -q -Y sign -f "$key" -n dermgate-release "$top/manifest.json"

tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner \
  -cf "$out/dermgate-$bundle_version.tar" "dermgate-$bundle_version"
echo "$out/dermgate-$bundle_version.tar"
