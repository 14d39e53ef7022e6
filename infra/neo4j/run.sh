#!/usr/bin/env bash
# Run the embedded Neo4j (Bolt on 127.0.0.1, no auth, no HTTP) in the foreground.
#   run.sh DATA_DIR [PORT]      (PORT defaults to $NEO4J_BOLT_PORT, then 7687)
# Prints "neo4j ready bolt://127.0.0.1:PORT" when it accepts connections; SIGTERM shuts down cleanly.
# It execs java, so the PID of this script is the PID of the JVM.
# Env knobs: NEO4J_HEAP (default 768m), NEO4J_PAGECACHE (default 128m), NEO4J_JAVA_OPTS (extra JVM flags).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

DATA_DIR="${1:-${NEO4J_DATA_DIR:-}}"
if [[ -z "$DATA_DIR" ]]; then
  echo "usage: $0 DATA_DIR [PORT]" >&2
  exit 2
fi
PORT="${2:-${NEO4J_BOLT_PORT:-7687}}"
mkdir -p "$DATA_DIR"

JAR="$HERE/target/attendwise-neo4j.jar"
LIB="$HERE/target/lib"
if [[ ! -f "$JAR" || ! -d "$LIB" ]]; then
  echo "run.sh: $JAR not built; run $HERE/build.sh first" >&2
  exit 1
fi

HEAP="${NEO4J_HEAP:-768m}"
# Flags taken from Neo4j 5's own launcher; the --add-opens keep Java 17 from
# refusing Neo4j's/Netty's reflective access to NIO internals.
JAVA_FLAGS=(
  -Xms128m "-Xmx$HEAP"
  -XX:+UseG1GC
  -XX:-OmitStackTraceInFastThrow
  -XX:+UnlockExperimentalVMOptions -XX:+TrustFinalNonStaticFields
  -XX:+DisableExplicitGC
  -Djdk.nio.maxCachedBufferSize=1024
  -Dio.netty.tryReflectionSetAccessible=true
  -Dlog4j2.disable.jmx=true
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --enable-native-access=ALL-UNNAMED
)
# shellcheck disable=SC2206
EXTRA=(${NEO4J_JAVA_OPTS:-})

exec java "${JAVA_FLAGS[@]}" "${EXTRA[@]}" -cp "$JAR:$LIB/*" attendwise.Neo4jLauncher "$DATA_DIR" "$PORT"
