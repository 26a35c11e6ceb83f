#!/usr/bin/env bash
# Creates every topic of deploy/topics.txt and its dead-letter topic <topic>.DLT. Idempotent
# (--if-not-exists), so it is safe on every `docker compose up`. Used by the kafka-init service.
#   KAFKA_BOOTSTRAP_SERVER            broker to talk to (required)
#   KAFKA_TOPIC_PARTITIONS            partitions per topic (default 3)
#   KAFKA_TOPIC_REPLICATION_FACTOR    replication factor (default 1)
#   TOPICS_FILE                       topic list (default: topics.txt beside this script)
#   KAFKA_TOPICS                      the kafka-topics tool (default /opt/kafka/bin/kafka-topics.sh)
set -euo pipefail
bootstrap=${KAFKA_BOOTSTRAP_SERVER:?KAFKA_BOOTSTRAP_SERVER is not set}
partitions=${KAFKA_TOPIC_PARTITIONS:-3}
replication=${KAFKA_TOPIC_REPLICATION_FACTOR:-1}
topics_file=${TOPICS_FILE:-$(dirname "${BASH_SOURCE[0]}")/topics.txt}
kafka_topics=${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}

count=0
while read -r topic; do
  [[ -z $topic || $topic == \#* ]] && continue
  for name in "$topic" "$topic.DLT"; do
    echo "topic $name (partitions $partitions, replication $replication)"
    "$kafka_topics" --bootstrap-server "$bootstrap" --create --if-not-exists \
      --topic "$name" --partitions "$partitions" --replication-factor "$replication"
    count=$((count + 1))
  done
done <"$topics_file"
if ((count == 0)); then
  echo "no topics found in $topics_file" >&2
  exit 1
fi
echo "$count topics present"
