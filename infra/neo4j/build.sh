#!/usr/bin/env bash
# Build the embedded Neo4j launcher (idempotent). Output:
#   target/attendwise-neo4j.jar  +  target/lib/*.jar   (run with run.sh, no Maven needed)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

JAR="target/attendwise-neo4j.jar"
LIB="target/lib"
STAMP="target/.build-ok"
SRC="src/main/java/attendwise/Neo4jLauncher.java"

up_to_date() {
  [[ -f "$JAR" && -d "$LIB" && -f "$STAMP" ]] || return 1
  compgen -G "$LIB/neo4j-*.jar" >/dev/null || return 1
  [[ "$STAMP" -nt pom.xml ]] || return 1
  # any source newer than the stamp -> rebuild
  [[ -z "$(find src -type f -newer "$STAMP" -print -quit)" ]] || return 1
  return 0
}

if up_to_date; then
  echo "neo4j launcher up to date ($JAR)"
  exit 0
fi

command -v mvn  >/dev/null || { echo "build.sh: ERROR: mvn not found on PATH" >&2; exit 1; }
command -v java >/dev/null || { echo "build.sh: ERROR: java not found on PATH" >&2; exit 1; }

echo "building neo4j launcher (mvn package; first run downloads ~120 MB of jars)..."
rm -rf "$LIB" "$STAMP"
if ! mvn -B -q -Dstyle.color=never -DskipTests package; then
  echo "build.sh: ERROR: maven build of infra/neo4j failed (see output above)" >&2
  exit 1
fi
if [[ ! -f "$JAR" ]] || ! compgen -G "$LIB/neo4j-*.jar" >/dev/null; then
  echo "build.sh: ERROR: build finished but $JAR or $LIB/neo4j-*.jar is missing" >&2
  exit 1
fi
touch "$STAMP"
echo "neo4j launcher built: $JAR (+ $(ls "$LIB" | wc -l) jars in $LIB)"
