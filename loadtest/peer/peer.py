"""The plainest enricher a user would write instead: confluent-kafka, json,
maxminddb and a dict cache, GeoIP only (no reverse DNS). The yardstick of
`loadtest/peer/broker_cpu.py`: the same records on the same broker.

    python peer.py BOOTSTRAP INPUT_TOPIC GROUP CITY.mmdb ASN.mmdb
"""
import json
import sys

import maxminddb
from confluent_kafka import Consumer, Producer

boot, topic, group, city_path, asn_path = sys.argv[1:6]
city, asn = maxminddb.open_database(city_path), maxminddb.open_database(asn_path)
cache = {}


def geo(ip):
    hit = cache.get(ip)
    if hit is None:
        hit = {}
        try:
            c = city.get(ip) or {}
            a = asn.get(ip) or {}
        except ValueError:
            c, a = {}, {}
        if "country" in c:
            hit["country"] = c["country"].get("iso_code")
        if "city" in c:
            hit["city"] = c["city"]["names"].get("en")
        if "autonomous_system_number" in a:
            hit["asn"] = a["autonomous_system_number"]
            hit["as_org"] = a.get("autonomous_system_organization")
        cache[ip] = hit
    return hit


consumer = Consumer({"bootstrap.servers": boot, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": True})
producer = Producer({"bootstrap.servers": boot, "linger.ms": 5})
consumer.subscribe([topic])
out = topic + "_enr"
while True:
    for m in consumer.consume(500, 1.0):
        if m.error():
            continue
        record = json.loads(m.value())
        for field in ("id.orig_h", "id.resp_h"):
            ip = record.get(field)
            if ip:
                for k, v in geo(ip).items():
                    record[f"{field}_{k}"] = v
        while True:
            try:
                producer.produce(out, json.dumps(record), key=m.key(), partition=m.partition())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
