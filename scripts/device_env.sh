# Sourced by the device scripts: espeak-ng from the carried .debs (with the no-op libpcaudio stub built
# from scripts/pcaudio_stub.c) and flashlight-text from the carried .whl, for a bare python3 + torch box.
mkdir -p /tmp/espeak
for f in .debs/*.deb; do dpkg -x "$f" /tmp/espeak; done
LIB=/tmp/espeak/usr/lib/x86_64-linux-gnu
rm -f "$LIB/libpcaudio.so.0" && cp .debs/libpcaudio.so.0 "$LIB/libpcaudio.so.0"
export ESPEAK_LIB=$LIB/libespeak-ng.so.1 ESPEAK_DATA=$LIB LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-}
if ! python3 -c "import flashlight.lib.text" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1
