#!/usr/bin/env bash
exec java -Xmx256m -cp "/opt/kafka/libs/*" -Dlog4j2.configurationFile=/etc/kafka/docker/tools-log4j2.yaml org.apache.kafka.tools.ConfigCommand "$@"
