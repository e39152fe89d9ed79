"""Any OpenAI-compatible server through the official `openai` client, and the async-to-thread bridge.

    python -c "from llm.openai_backend import public_url; print(public_url('http://u:p@host:8000/v1'))"
"""
import contextlib
import json
import os
import queue
import re
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from llm.backends import Reply
from llm.prompts import SEPARATOR, budget_text, prompt_hash
from utils import InputError

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # where `vllm serve` listens by default
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
NO_KEY = "EMPTY"  # sent when no key is set: local servers started without a key ignore it


def public_url(url):
    """`url` without user:password@, query or fragment: safe to print and to write in the report."""
    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def parse_headers(lines, from_env=()):
    """`--header 'Name: value'` and `--header_env 'Name: VARIABLE'` options -> {name: value}.

    A value is never echoed (it may be a key); --header_env reads it from the environment variable,
    which keeps it out of `ps` and the shell history.
    """
    headers = {}
    for flag, options in (("--header", lines or ()), ("--header_env", from_env or ())):
        for number, line in enumerate(options, 1):
            name, sep, value = line.partition(":")
            if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name.strip()):
                what = "'Name: VARIABLE' with a header name before ':'" if flag == "--header_env" else \
                    "'Name: value' with a header name before ':'"
                raise InputError(f"{flag} number {number}: expected {what}")
            if flag == "--header_env":
                variable = value.strip()
                if variable not in os.environ:
                    raise InputError(f"--header_env {name.strip()}: environment variable {variable!r} is not set")
                value = os.environ[variable]
            headers[name.strip()] = value.strip()
    return headers


def same_origin(url, base):
    """Whether two URLs share scheme, host and port (the port a scheme implies included)."""
    default = {"http": 80, "https": 443}
    a, b = urlsplit(str(url)), urlsplit(str(base))
    return (a.scheme, a.hostname, a.port or default.get(a.scheme)) == (b.scheme, b.hostname,
                                                                        b.port or default.get(b.scheme))


def error_detail(body, fallback):
    """The server's own words for an error, on one line (OpenAI, vLLM and FastAPI error shapes)."""
    detail = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        detail = detail.get("message", detail.get("detail", detail))
    text = detail if isinstance(detail, str) else json.dumps(detail) if detail is not None else fallback
    return " ".join(str(text).split())[:300]


_DONE = object()


@dataclass
class _Failed:
    error: BaseException


def stream_from_loop(work):
    """Run `await work(emit)` on an asyncio loop in a helper thread; yield each item it emits.

    Ctrl-C reaches the main thread only, which waits here: it cancels the loop's work at once (the
    requests in flight are dropped, not waited for), then still yields every item emitted before,
    so their answers get cached, and then lets KeyboardInterrupt go on. An error of `work` is
    raised here after the items emitted before it.
    """
    import asyncio

    items = queue.Queue()
    handle = {}
    started = threading.Event()

    async def runner():
        handle["loop"], handle["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        try:
            await work(items.put)
        except asyncio.CancelledError:
            pass
        except BaseException as err:  # handed to the main thread, which raises it
            items.put(_Failed(err))
        finally:
            items.put(_DONE)

    thread = threading.Thread(target=asyncio.run, args=(runner(),), name="llm-requests", daemon=True)
    thread.start()
    started.wait()

    def stop():
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may have closed meanwhile
                handle["loop"].call_soon_threadsafe(handle["task"].cancel)
            thread.join()

    try:
        while (item := items.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    except KeyboardInterrupt:
        stop()
        while not items.empty():
            item = items.get_nowait()
            if item is not _DONE and not isinstance(item, _Failed):
                yield item
        raise
    finally:
        stop()


async def run_all(coroutines):
    """Await `coroutines` together; the first InputError cancels the others and is raised alone."""
    import asyncio

    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except* InputError as errors:
        raise errors.exceptions[0] from None


@dataclass
class Usage:
    """The server's `usage` summed over the requests made for one answer."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = False      # False: no request reported usage, so the totals are unknown

    def add(self, body):
        usage = getattr(body, "usage", None)
        if usage is not None:
            self.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
            self.completion_tokens += getattr(usage, "completion_tokens", 0) or 0
            self.reported = True

    def totals(self):
        return (self.prompt_tokens, self.completion_tokens) if self.reported else None


class OpenAIBackend:
    """Any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs) through the
    official `openai` client.

    `api="completions"` sends the published prompt as is (the published setting); `"chat"` sends it
    unchanged as one user message, after an optional system message. Both decode greedily with the
    answer budget as max_tokens and stop at the separator. The client retries 408/409/429 (honouring
    Retry-After up to two minutes), 5xx, dropped connections and timeouts, with exponential backoff
    (0.5 s doubling to 8 s, minus up to 25% jitter), `max_retries` times per request; any other
    failure, and one still failing after that, stops the run with one InputError line.
    """

    def __init__(self, base_url, model, api="completions", system=None, api_key_env=DEFAULT_KEY_ENV,
                 headers=(), header_env=(), tokenizer=None, concurrency=16, timeout=600.0, max_retries=5, stop="vllm"):
        try:
            import openai  # noqa: F401 - checked here so a missing package is one line, before any work
        except ImportError:
            raise InputError("--backend openai needs the openai package: pip install -r requirements.txt") from None
        self.base_url = base_url.rstrip("/")
        self.shown_url = public_url(self.base_url)
        self.model_id = str(model)
        self.api = api
        self.system = system
        # The cache key: answers of another API kind or system message are other answers.
        self.api_tag = f"chat+system:{prompt_hash(system)}" if api == "chat" and system else api
        self.endpoint = f"{self.shown_url}/{'chat/completions' if api == 'chat' else 'completions'}"
        self.concurrency, self.timeout, self.max_retries, self.stop = concurrency, timeout, max_retries, stop
        key = os.environ.get(api_key_env, "")
        if not key and api_key_env != DEFAULT_KEY_ENV:
            raise InputError(f"--api_key_env {api_key_env}: that environment variable is not set")
        self.key_env = api_key_env
        self._key = key or NO_KEY
        self._headers = parse_headers(headers, header_env)
        # Never printed: the key and header values are masked in every message a server sends back.
        self._secrets = [s for s in (key, *self._headers.values()) if len(s) >= 4]
        tokenizer = tokenizer or ("usage" if api == "chat" else self.model_id)
        self.count_mode = tokenizer if tokenizer in ("server", "usage") else "local"
        self.tokenizer = None
        if self.count_mode == "local":
            try:
                from transformers import AutoTokenizer
                self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
            except Exception as err:  # noqa: BLE001 - any loader failure is a user-facing input problem
                message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise InputError(f"cannot load tokenizer {tokenizer!r} (or pass --tokenizer server or usage): "
                                 f"{message}") from None

    # -- one request ----------------------------------------------------------------------------

    def _client(self):
        import openai

        async def keep_secrets_at_home(request):
            # The client follows redirects; one to another origin gets neither the key nor the
            # header values (httpx itself drops only Authorization, and not on http -> https).
            if not same_origin(request.url, self.base_url):
                for name in ("Authorization", *self._headers):
                    request.headers.pop(name, None)

        http_client = openai.DefaultAsyncHttpxClient(event_hooks={"request": [keep_secrets_at_home]})
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key, max_retries=self.max_retries,
                                  timeout=self.timeout, default_headers=self._headers, http_client=http_client)

    def _masked(self, text):
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _call(self, what, send, hints=None):
        """Await `send()`; return (body, retries taken). What fails after the client's retries -> InputError."""
        import openai

        try:
            result = await send()
            parse = getattr(result, "parse", None)  # a raw response; a plain body otherwise
            return (parse() if parse else result), getattr(result, "retries_taken", 0)
        except openai.APIStatusError as err:
            status = err.status_code
            detail = self._masked(error_detail(err.body, err.message))
            if status in (408, 409, 429) or status >= 500:
                wait = err.response.headers.get("retry-after", "")
                if re.fullmatch(r"\d+(\.\d*)?", wait.strip()) and float(wait) > 120:
                    raise InputError(f"{what} answered HTTP {status} {detail} and asks to wait {wait} s "
                                     f"(Retry-After), longer than the client waits (120 s): rerun later") from None
                raise InputError(f"{what} answered HTTP {status} {detail}, still after {self.max_retries} "
                                 f"retries") from None
            hint = (hints or {}).get(status) or {
                400: ("the server does not take vLLM's include_stop_str_in_output: pass --stop plain"
                      if "include_stop_str_in_output" in detail else "the server refused the request"),
                401: f"check the key in ${self.key_env} (--api_key_env)",
                403: f"the key in ${self.key_env} has no access to this model or endpoint",
                404: f"unknown model {self.model_id!r}, or --base_url {self.shown_url} is not the API root "
                     f"(it usually ends in /v1)"}.get(status, "the server refused the request")
            raise InputError(f"{what} answered HTTP {status}: {detail}; {hint}") from None
        except openai.APITimeoutError:
            raise InputError(f"{what}: no answer within --timeout {self.timeout:g} s, still after "
                             f"{self.max_retries} retries") from None
        except openai.APIConnectionError as err:
            reason = self._masked(" ".join(str(err.__cause__ or err).split()))[:300]
            raise InputError(f"cannot reach {what}: {reason}, still after {self.max_retries} retries") from None
        except ValueError as err:  # UnicodeDecodeError, JSONDecodeError: not a JSON text body
            raise InputError(f"{what} answered a body that is not UTF-8 JSON ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:120]})") from None

    def _send(self, client, text, max_tokens, with_system=True):
        options = {"model": self.model_id, "max_tokens": max_tokens, "temperature": 0, "top_p": 1, "n": 1}
        if self.stop != "none":
            options["stop"] = [SEPARATOR]
        if self.stop == "vllm":
            options["extra_body"] = {"include_stop_str_in_output": True}
        if self.api == "completions":
            return client.completions.with_raw_response.create(prompt=text, **options)
        messages = [{"role": "system", "content": self.system}] if self.system and with_system else []
        messages.append({"role": "user", "content": text})
        return client.chat.completions.with_raw_response.create(messages=messages, **options)

    def _answer_text(self, body):
        try:
            choice = body.choices[0]
            text = choice.text if self.api == "completions" else (choice.message.content or "")
        except (AttributeError, IndexError, TypeError):
            field = "text" if self.api == "completions" else "message.content"
            raise InputError(f"{self.endpoint} answered without choices[0].{field}") from None
        if not isinstance(text, str):
            raise InputError(f"{self.endpoint} answered a choices[0] text that is not a string")
        if self.stop != "none" and SEPARATOR not in text and getattr(choice, "stop_reason", None) == SEPARATOR:
            # Stopped on the separator but left it out: put it back so the cut drops its line.
            text += SEPARATOR
        return text

    def _prompt_tokens(self, body, why):
        tokens = getattr(getattr(body, "usage", None), "prompt_tokens", None)
        if not isinstance(tokens, int):
            raise InputError(f"{self.endpoint} sent no usage.prompt_tokens, which {why} needs: "
                             f"pass --tokenizer server (vLLM, llama.cpp) or a tokenizer name")
        return tokens

    async def _ask(self, client, request):
        usage = Usage()
        budget, rule_tokens, retries = request.max_new_tokens, None, 0
        if budget is None:
            # --tokenizer usage: the budget is the server's count of the budget text.
            text = budget_text(request.prompt)
            body, retries = await self._call(self.endpoint, lambda: self._send(client, text, 1, with_system=False))
            budget = self._prompt_tokens(body, "--tokenizer usage")
            usage.add(body)
        body, more = await self._call(self.endpoint, lambda: self._send(client, request.prompt, budget))
        retries += more
        usage.add(body)
        if request.max_new_tokens is None:
            rule_tokens = (self._prompt_tokens(body, "--tokenizer usage"), budget)
        return Reply(request.prompt + self._answer_text(body), rule_tokens, usage.totals(), retries)

    async def _count_on_server(self, client, text):
        root = re.sub(r"/v1$", "", self.base_url)
        # vLLM reads model/prompt/add_special_tokens, llama.cpp reads content/add_special.
        payload = {"model": self.model_id, "prompt": text, "content": text,
                   "add_special_tokens": True, "add_special": True}
        where = f"{public_url(root)}/tokenize"
        body, _ = await self._call(where, lambda: client.post(f"{root}/tokenize", cast_to=object, body=payload),
                                   hints={404: "the server has no /tokenize (vLLM and llama.cpp have one): "
                                               "pass --tokenizer usage or a tokenizer name"})
        if isinstance(body, dict) and isinstance(body.get("count"), int):
            return body["count"]
        if isinstance(body, dict) and isinstance(body.get("tokens"), list):
            return len(body["tokens"])
        raise InputError(f"{where} answered without 'count' or 'tokens'")

    # -- many requests ----------------------------------------------------------------------------

    def _bounded(self, items, ask):
        """Yield (item, await ask(client, item)) for every item, at most `concurrency` in flight."""
        import asyncio

        async def work(emit):
            async with self._client() as client:
                limit = asyncio.Semaphore(self.concurrency)

                async def one(item):
                    async with limit:
                        emit((item, await ask(client, item)))

                await run_all(one(item) for item in items)

        return stream_from_loop(work)

    def token_lengths(self, requests):
        prompts = [r.prompt for r in requests]
        subs = [budget_text(p) for p in prompts]
        if self.count_mode == "usage":
            return [(None, None)] * len(requests)
        if self.count_mode == "local":
            full = self.tokenizer(prompts)["input_ids"]
            sub = self.tokenizer(subs)["input_ids"]
            return [(len(a), len(b)) for a, b in zip(full, sub)]
        texts = dict(enumerate(prompts + subs))
        counts = dict(self._bounded(texts, lambda client, i: self._count_on_server(client, texts[i])))
        return [(counts[i], counts[i + len(prompts)]) for i in range(len(prompts))]

    def generate(self, requests):
        yield from self._bounded(requests, self._ask)
