"""A kubectl stand-in (installed as ``kubectl``, first on PATH, by the ``kubectl`` fixture).

Each call is appended to a log as one JSON line: its argv (``kubectl`` first), the
``KUBECTL_APPLYSET`` it ran with, and for ``-f FILE`` the images that file pins. The answer
(exit code, stdout, stderr) comes from a JSON script by call key (``config current-context``,
``get secret``, ``diff``, ``apply``, ``rollout status``); a list of answers is used in turn, its
last one from then on. ``kustomize`` is passed to the real kubectl: rendering is offline.
"""

import json
import os
import re
import sys
from pathlib import Path

TWO_WORDS = ("config", "get", "rollout")


def key_of(words: list[str]) -> str:
    if words[:1] == ["--context"]:
        words = words[2:]
    return " ".join(words[:2]) if words[:1] and words[0] in TWO_WORDS else " ".join(words[:1])


def images(argv: list[str]) -> list[str]:
    if "-f" not in argv:
        return []
    text = Path(argv[argv.index("-f") + 1]).read_text(encoding="utf-8")
    return re.findall(r"^\s*image: (\S+)$", text, flags=re.MULTILINE)


def main() -> int:
    config = json.loads(Path(os.environ["KUBECTL_STANDIN"]).read_text(encoding="utf-8"))
    words = sys.argv[1:]
    if words[:1] == ["kustomize"]:
        os.execv(config["real"], [config["real"], *words])
    key = key_of(words)
    log = Path(config["log"])
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    seen = sum(1 for line in lines if json.loads(line)["key"] == key)
    record = {
        "key": key,
        "argv": ["kubectl", *words],
        "KUBECTL_APPLYSET": os.environ.get("KUBECTL_APPLYSET"),
        "images": images(words),
    }
    with log.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    answer = config["answers"].get(key, {})
    if isinstance(answer, list):
        answer = answer[min(seen, len(answer) - 1)]
    sys.stdout.write(answer.get("stdout", ""))
    sys.stderr.write(answer.get("stderr", ""))
    return int(answer.get("rc", 0))


if __name__ == "__main__":
    sys.exit(main())
