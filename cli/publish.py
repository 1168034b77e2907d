"""`predmesh publish`: queue prediction jobs on RabbitMQ (PREDMESH_AMQP_URL) and optionally wait for the results."""
from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

import grpc
from google.protobuf import json_format
from google.rpc import status_pb2

from consumer.settings import AmqpSettings
from predmesh import jobs
from predmesh.env import ConfigError, env_epilog, variables_read


def _rows(args) -> list[dict]:
    if args.features is not None:
        return [json.loads(args.features)]
    with (sys.stdin if args.file == "-" else open(args.file)) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="predmesh publish", description="Queue one job per row for the consumer.",
                                     epilog=env_epilog(variables_read(AmqpSettings.from_env)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model name")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", help='one row as JSON, e.g. \'{"sepal_length": 5.1, ...}\'')
    src.add_argument("--file", help="JSON lines, one row of features per line (- for stdin); "
                     'a line may also be {"features": {...}, "request_id": "..."}')
    parser.add_argument("--json", action="store_true", help="send proto3 JSON instead of binary protobuf")
    parser.add_argument("--wait", action="store_true", help="wait for every result (direct reply-to) and print it")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for results (default 30)")
    args = parser.parse_args(argv)
    try:
        amqp = AmqpSettings.from_env(os.environ)
        rows = _rows(args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"predmesh publish: {exc}", file=sys.stderr)
        return 2
    from predmesh.publisher import Publisher, PublishError

    content_type = jobs.JSON if args.json else jobs.PROTOBUF
    ids = []
    try:
        with Publisher(amqp.url, prefix=amqp.prefix, delivery_limit=amqp.delivery_limit) as publisher:
            items = []
            for row in rows:
                features, request_id = (row["features"], row.get("request_id", "")) if "features" in row \
                    else (row, "")
                items.append((jobs.predict_job(args.model, features, request_id), str(uuid.uuid4())))
            ids = publisher.publish_many(items, content_type=content_type, reply=args.wait)
            print(f"queued {len(ids)} job(s) on {publisher.topology.work_queue}", file=sys.stderr)
            if not args.wait:
                return 0
            results = publisher.wait_results(ids, args.timeout)
    except (PublishError, TypeError, ValueError) as exc:
        print(f"predmesh publish: {exc}", file=sys.stderr)
        return 1
    failed = 0
    for message_id in ids:
        result = results.get(message_id)
        if isinstance(result, status_pb2.Status):  # the consumer rejected the job (it is in the dead-letter queue)
            failed += 1
            code = grpc.StatusCode(next((c.value for c in grpc.StatusCode if c.value[0] == result.code),
                                        grpc.StatusCode.UNKNOWN.value))
            print(json.dumps({"message_id": message_id, "error": {"code": result.code, "status": code.name,
                                                                  "message": result.message}}))
            continue
        print(json.dumps({"message_id": message_id,
                          "result": json_format.MessageToDict(result, preserving_proto_field_name=True)
                          if result is not None else None}))
    missing = len(ids) - len(results)
    if failed:
        print(f"predmesh publish: {failed} job(s) rejected (see their error lines; they are in the dead-letter "
              "queue)", file=sys.stderr)
    if missing:
        print(f"predmesh publish: {missing} result(s) did not arrive within {args.timeout:g} s "
              "(is `predmesh consume` running?)", file=sys.stderr)
    return 1 if failed or missing else 0
