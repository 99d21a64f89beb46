"""The real OpenAI Python SDK against `sluice proxy`.

Run by crates/sluice/tests/proxy.rs with the venv interpreter in SLUICE_OPENAI_PYTHON
(scripts/test installs the `openai` package there). It sends a burst of chat completions
from many threads through the proxy with the SDK's own retries off (max_retries=0), so any
429 the proxy let through would surface as a RateLimitError, then one streamed completion
with stream_options.include_usage. It prints one JSON object with what happened:

    {"openai_version": "...", "requests": 150, "ok": 150, "rate_limited": 0, "errors": [],
     "elapsed_s": 2.1, "stream": {"chunks": 8, "content": "tok tok ...", "usage": 27,
     "first_s": 0.01, "last_s": 0.9}}
"""

import argparse
import concurrent.futures
import json
import sys
import time

import openai
from openai import OpenAI


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the proxy, e.g. http://127.0.0.1:8090/v1")
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--model", default="gpt-fake")
    args = parser.parse_args()

    # The key only has to look like one: the proxy passes it through untouched.
    client = OpenAI(
        base_url=args.base_url,
        api_key="sk-test-not-a-real-key",
        max_retries=0,
        timeout=60.0,
    )

    def one(i: int):
        try:
            completion = client.chat.completions.create(
                model=args.model,
                messages=[{"role": "user", "content": f"request {i}"}],
                max_tokens=16,
            )
            return ("ok", completion.usage.total_tokens if completion.usage else None)
        except openai.RateLimitError as e:
            return ("429", str(e)[:200])
        except openai.APIStatusError as e:
            return (f"status {e.status_code}", str(e)[:200])
        except openai.APIConnectionError as e:
            return ("connection", str(e)[:200])

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        results = list(pool.map(one, range(args.requests)))
    elapsed = time.monotonic() - started

    stream_started = time.monotonic()
    stream = client.chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": "Stream me a story."}],
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals = []
    content = ""
    usage = None
    for chunk in stream:
        arrivals.append(time.monotonic() - stream_started)
        if chunk.choices:
            content += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage.total_tokens

    summary = {
        "openai_version": openai.__version__,
        "requests": len(results),
        "ok": sum(1 for kind, _ in results if kind == "ok"),
        "rate_limited": sum(1 for kind, _ in results if kind == "429"),
        "errors": [f"{kind}: {detail}" for kind, detail in results if kind != "ok"][:5],
        "elapsed_s": round(elapsed, 3),
        "stream": {
            "chunks": len(arrivals),
            "content": content,
            "usage": usage,
            "first_s": round(arrivals[0], 3) if arrivals else None,
            "last_s": round(arrivals[-1], 3) if arrivals else None,
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
