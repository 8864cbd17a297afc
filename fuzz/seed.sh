#!/usr/bin/env bash
# Builds the seed corpora of the fuzz targets from recorded Zeek logs.
#
#   fuzz/seed.sh [ZEEK_DIR]     (default: ../shared/data/zeek beside the repository)
#
# ZEEK_DIR holds json/*.json.gz (one Zeek JSON record a line) and
# tsv/*.log.gz (Zeek TSV logs with their header blocks). The seeds go to
# fuzz/corpus/<target>/, which is git-ignored: the recorded logs are never
# committed. Existing corpus files are kept, so the script can be rerun after a
# fuzzing session has grown the corpus.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
data=${1:-$here/../../shared/data/zeek}
per_log=${SEEDS_PER_LOG:-60}

if ! compgen -G "$data/json/*.json.gz" >/dev/null || ! compgen -G "$data/tsv/*.log.gz" >/dev/null; then
    echo "seed.sh: no json/*.json.gz or tsv/*.log.gz under $data" >&2
    exit 66
fi

corpus=$here/corpus
mkdir -p "$corpus"/{json_scan,splice,tsv,ip_canonical}

# Evenly spaced lines of a stream, at most $2 of them.
sample() {
    local lines=$1 want=$2
    awk -v step=$(((lines + want - 1) / want)) 'step <= 1 || NR % step == 1'
}

# JSON records: one record a seed, for the scanner and the splicer.
for log in "$data"/json/*.json.gz; do
    name=$(basename "$log" .json.gz)
    lines=$(zcat "$log" | wc -l)
    zcat "$log" | sample "$lines" "$per_log" | head -n "$per_log" |
        split -l 1 -d -a 4 - "$corpus/json_scan/zeek-$name-"
done
# Records whose addresses the fuzz targets' GeoIP fixture knows, so the
# splicer writes enrichment and not only provenance.
synthetic=(
    '{"_path":"conn","ts":1700000000.5,"uid":"C1","id.orig_h":"10.0.0.1","id.orig_p":1234,"id.resp_h":"81.2.69.142","id.resp_p":443,"proto":"tcp"}'
    '{"_path":"dns","id.orig_h":"2001:db8::1","id.resp_h":"8.8.8.8","query":"example.org","answers":["example.org","89.160.20.112","203.0.113.9","::ffff:1.128.0.1"]}'
    '{"_path":"conn","id":{"orig_h":"[2001:DB8::2]","resp_h":" 89.160.20.112 "},"srcip":"fe80::1%eth0","dstip":"1.128.3.4"}'
    '{"srcip":"81.2.69.142","dstip":"81.2.69.142","nested":{"a":[1,2,{"b":null}]},"s":"\u00e9\ud83d\ude00\n"}'
)
for i in "${!synthetic[@]}"; do
    printf '%s\n' "${synthetic[$i]}" >"$corpus/json_scan/synthetic-$i"
done
cp "$corpus"/json_scan/* "$corpus/splice/"

# TSV: each log's header block with a few rows, four rows a seed.
for log in "$data"/tsv/*.log.gz; do
    name=$(basename "$log" .log.gz)
    rows=$(zcat "$log" | grep -vc '^#' || true)
    zcat "$log" | awk -v out="$corpus/tsv/zeek-$name-" -v max="$per_log" \
        -v step=$(((rows + per_log - 1) / per_log)) '
        /^#/ { if (!rows) header = header $0 "\n"; next }
        {
            rows++
            if (step > 1 && rows % step != 1) next
            if (taken >= max) exit
            if (taken % 4 == 0) {
                if (file) close(file)
                file = sprintf("%s%04d", out, taken / 4)
                printf "%s", header > file
            }
            print > file
            taken++
        }'
done
# Two logs in one stream: the header changes midway, once with a new
# `#separator` block and once with only new `#fields` and `#types` lines.
firsts=("$corpus"/tsv/zeek-*-0000)
for i in $(seq 0 2 $((${#firsts[@]} - 2))); do
    a=${firsts[$i]} b=${firsts[$((i + 1))]}
    pair=$(basename "$a" -0000)-$(basename "$b" -0000 | sed 's/^zeek-//')
    cat "$a" "$b" >"$corpus/tsv/switch-$pair"
    { cat "$a"; grep -v '^#separator' "$b"; } >"$corpus/tsv/refields-$pair"
done

# Addresses: the distinct values of Zeek's address fields and DNS answers,
# plus the odd forms the normaliser is meant to fold or refuse.
zcat "$data"/json/*.json.gz |
    grep -oE '"(id\.orig_h|id\.resp_h)":"[^"]*"|"answers":\[[^]]*\]' |
    sed -E 's/^"answers":\[//; s/\]$//; s/^"id\.(orig|resp)_h"://' |
    tr ',' '\n' | sed -E 's/^"//; s/"$//' | sort -u | head -n 400 |
    awk -v out="$corpus/ip_canonical/zeek-" '{ file = sprintf("%s%04d", out, NR); printf "%s", $0 > file; close(file) }'
odd=(
    '::ffff:192.0.2.1' '::ffff:c000:0201' 'fe80::1%eth0' '[fe80::1%25eth0]' '010.001.001.001'
    '2001:DB8::1428:57AB' ' 10.0.0.1 ' '[::1]' '::1.2.3.4' '64:ff9b::192.0.2.33'
    '2001:0db8:0000:0000:0000:0000:1428:57ab' "$(printf '1%.0s' {1..70})" '' '-' '(empty)'
    '1.2.3.4%eth0' '[1.2.3.4]' '::' '0.0.0.0' '255.255.255.255' '1:2:3:4:5:6:7:8'
)
for i in "${!odd[@]}"; do
    printf '%s' "${odd[$i]}" >"$corpus/ip_canonical/odd-$i"
done

for target in json_scan splice tsv ip_canonical; do
    echo "$target: $(find "$corpus/$target" -type f | wc -l) seeds"
done
