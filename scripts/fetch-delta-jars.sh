#!/usr/bin/env bash
# Download the Delta Lake JARs and their runtime dependencies with Maven into .jars/.
#
# This is the fallback for machines where Spark's own Ivy resolution of
# spark.jars.packages fails (for example behind a proxy that only Maven is set up for).
# get_spark passes the JARs as spark.jars when SYNTHSPARK_JARS_DIR=<repo>/.jars.
# JARs whose artifact pyspark already ships in pyspark/jars (Spark, Scala, Hadoop
# client, Jackson, ...) are left out, so the classpath keeps pyspark's versions.
#
# Usage: scripts/fetch-delta-jars.sh [GROUP:ARTIFACT:VERSION]
# The default coordinate is delta_maven_coordinate() of the synthspark in .venv.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_python="$repo_root/.venv/bin/python"
jars_dir="$repo_root/.jars"
# Pinned because Maven 3.8's super POM would otherwise select maven-dependency-plugin 2.8.
dependency_plugin_version=3.8.1

log() { echo "fetch-delta-jars: $*" >&2; }
fail() { echo "fetch-delta-jars: error: $*" >&2; exit 1; }

[[ -x "$venv_python" ]] || fail "$venv_python not found: run scripts/setup.sh first"
command -v mvn >/dev/null 2>&1 || fail "mvn not found: install Maven (apt-get install maven)"

coordinate="${1:-$("$venv_python" -c 'from synthspark.session import delta_maven_coordinate; print(delta_maven_coordinate())')}"
IFS=: read -r group artifact version extra <<<"$coordinate"
if [[ -z "$group" || -z "$artifact" || -z "$version" || -n "$extra" ]]; then
  fail "invalid Maven coordinate '$coordinate', expected GROUP:ARTIFACT:VERSION"
fi

pyspark_jars="$("$venv_python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
[[ -d "$pyspark_jars" ]] || fail "pyspark JAR folder $pyspark_jars not found: reinstall pyspark with scripts/setup.sh"

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

cat >"$work_dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.synthspark</groupId>
  <artifactId>delta-jars</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>$group</groupId>
      <artifactId>$artifact</artifactId>
      <version>$version</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>$dependency_plugin_version</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF

# Maven's output goes to a log, shown on failure: with -q, Maven 3.8 still prints bare
# ANSI reset codes even in batch mode, which clutter CI logs.
run_maven() {
  if ! mvn -B -q -f "$work_dir/pom.xml" "$@" \
    -DincludeScope=runtime \
    -DexcludeGroupIds=org.apache.spark,org.scala-lang,org.scala-lang.modules \
    >"$work_dir/maven.log" 2>&1; then
    sed -E 's/\x1b\[[0-9;]*m//g' "$work_dir/maven.log" >&2
    fail "mvn $1 failed for $coordinate (output above)"
  fi
}

log "resolving $coordinate with Maven"
# Spark and Scala are excluded by group; delta-spark declares Spark as provided, so this is a safeguard.
run_maven dependency:copy-dependencies -DoutputDirectory="$work_dir/jars"
run_maven dependency:list -DoutputFile="$work_dir/dependencies.txt"

# dependencies.txt lists one GROUP:ARTIFACT:TYPE[:CLASSIFIER]:VERSION:SCOPE a line,
# and copy-dependencies names each file ARTIFACT-VERSION[-CLASSIFIER].jar.
kept=0
skipped=0
while IFS=: read -r -a fields; do
  case ${#fields[@]} in
    5) dep_artifact=${fields[1]} dep_type=${fields[2]} dep_version=${fields[3]} suffix="" ;;
    6) dep_artifact=${fields[1]} dep_type=${fields[2]} dep_version=${fields[4]} suffix="-${fields[3]}" ;;
    *) fail "unexpected line in Maven's dependency list: ${fields[*]}" ;;
  esac
  [[ "$dep_type" == jar ]] || continue
  jar="$work_dir/jars/$dep_artifact-$dep_version$suffix.jar"
  [[ -f "$jar" ]] || fail "Maven listed ${fields[*]} but $jar was not copied"
  # pyspark names its JARs ARTIFACT-VERSION.jar too; the version pyspark ships wins.
  if compgen -G "$pyspark_jars/$dep_artifact-[0-9]*.jar" >/dev/null; then
    rm -f "$jar"
    skipped=$((skipped + 1))
  else
    kept=$((kept + 1))
  fi
done < <(grep -E '^ +[^ :]+:[^ :]+:' "$work_dir/dependencies.txt" | sed -E 's/^ +//; s/ .*//')

[[ -f "$work_dir/jars/$artifact-$version.jar" ]] || fail "$artifact-$version.jar is missing from the Maven output"

# Replace .jars only after a complete download, so that an interrupted run never leaves a partial folder.
rm -rf "$jars_dir.tmp"
mv "$work_dir/jars" "$jars_dir.tmp"
rm -rf "$jars_dir"
mv "$jars_dir.tmp" "$jars_dir"
log "wrote $kept JARs to $jars_dir ($skipped left out because pyspark ships them):"
ls -1 "$jars_dir" >&2
