#!/usr/bin/env bash
# Creates every topic of deploy/topics.txt (business topics and their dead-letter topics <topic>.DLT)
# with the configs listed beside it (retention, cleanup policy; generated from
# crates/contracts/src/topics.rs), then sets those configs on each topic, so that a topic that
# existed with other values is brought back to the table (incremental: its other overrides stay).
# Idempotent (--if-not-exists, --alter --add-config), so it is safe on every `docker compose up`.
# Used by the kafka-init service.
#   KAFKA_BOOTSTRAP_SERVER            broker to talk to (required)
#   KAFKA_TOPIC_PARTITIONS            partitions per topic (default 3)
#   KAFKA_TOPIC_REPLICATION_FACTOR    replication factor (default 1)
#   TOPICS_FILE                       topic table (default: topics.txt beside this script)
#   KAFKA_TOPICS                      the kafka-topics tool (default /opt/kafka/bin/kafka-topics.sh)
#   KAFKA_CONFIGS                     the kafka-configs tool (default /opt/kafka/bin/kafka-configs.sh)
set -euo pipefail
bootstrap=${KAFKA_BOOTSTRAP_SERVER:?KAFKA_BOOTSTRAP_SERVER is not set}
partitions=${KAFKA_TOPIC_PARTITIONS:-3}
replication=${KAFKA_TOPIC_REPLICATION_FACTOR:-1}
topics_file=${TOPICS_FILE:-$(dirname "${BASH_SOURCE[0]}")/topics.txt}
kafka_topics=${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}
kafka_configs=${KAFKA_CONFIGS:-/opt/kafka/bin/kafka-configs.sh}

count=0
while read -r name configs; do
  [[ -z $name || $name == \#* ]] && continue
  read -r -a pairs <<<"$configs"
  ((${#pairs[@]} > 0)) || { echo "topic $name has no configs in $topics_file" >&2; exit 1; }
  create_args=()
  for pair in "${pairs[@]}"; do create_args+=(--config "$pair"); done
  echo "topic $name (partitions $partitions, replication $replication, ${pairs[*]})"
  "$kafka_topics" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor "$replication" "${create_args[@]}"
  # A topic that existed keeps its own values unless set again here.
  "$kafka_configs" --bootstrap-server "$bootstrap" --alter --entity-type topics \
    --entity-name "$name" --add-config "$(IFS=,; echo "${pairs[*]}")"
  count=$((count + 1))
done <"$topics_file"
if ((count == 0)); then
  echo "no topics found in $topics_file" >&2
  exit 1
fi
echo "$count topics present, configs as in $topics_file"
