#!/usr/bin/env python3
"""Parse a Prometheus textfile (watchd --metrics-file) with prometheus_client's own parser.

Usage: prom_check.py [--strict] FILE

Prints one line per sample, `name value` or `name{label="v",...} value`, in file order.
Exit status: 0 parsed, 1 parse error (or, with --strict, a family without HELP or TYPE),
2 usage error, unreadable file or prometheus_client missing.
"""

import math
import sys


def fmt_value(v):
    v = float(v)  # the parser returns int for integer text
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 2**63:
        return str(int(v))
    return repr(v)


def fmt_series(sample):
    if not sample.labels:
        return sample.name
    labels = ",".join(
        '%s="%s"' % (k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
        for k, v in sorted(sample.labels.items())
    )
    return "%s{%s}" % (sample.name, labels)


def main(argv):
    args = argv[1:]
    strict = "--strict" in args
    args = [a for a in args if a != "--strict"]
    if len(args) != 1:
        print("usage: prom_check.py [--strict] FILE", file=sys.stderr)
        return 2
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError as e:
        print("prom_check: prometheus_client is not installed: %s" % e, file=sys.stderr)
        return 2
    try:
        with open(args[0], encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        print("prom_check: cannot read %s: %s" % (args[0], e), file=sys.stderr)
        return 2

    samples = []
    try:
        # The parser is a generator: errors surface while iterating, so collect everything
        # before printing anything.
        for family in text_string_to_metric_families(text):
            if strict and (family.type == "unknown" or not family.documentation):
                print(
                    "prom_check: %s: family %s lacks # HELP or # TYPE" % (args[0], family.name),
                    file=sys.stderr,
                )
                return 1
            samples.extend(family.samples)
    except Exception as e:  # the parser raises ValueError, but also IndexError/KeyError on junk
        print("prom_check: %s: parse error: %s: %s" % (args[0], type(e).__name__, e), file=sys.stderr)
        return 1
    sys.stdout.write("".join("%s %s\n" % (fmt_series(s), fmt_value(s.value)) for s in samples))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
