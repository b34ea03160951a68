"""Test helpers: scripted answers for the tiny model, tool-call markup."""

from __future__ import annotations

import json


class Script:
    """Replaces the session's token sampler: each answer is the next scripted reply, then the
    end-of-turn token. Everything else (feeding, writing the state, parsing) is the real path."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.replies: list[str] = []
        self.current: list[int] | None = None
        self.answers = 0

    def say(self, *replies: str) -> Script:
        self.replies.extend(replies)
        return self

    def __call__(self, logits, gen, generator) -> int:
        if self.current is None:
            if not self.replies:
                raise AssertionError("the model was asked for more answers than were scripted")
            text = self.replies.pop(0)
            forced = gen.response_prefix  # the answer was made to start with it: say the rest
            if forced and forced in text:
                text = text[text.find(forced) + len(forced) :]
            self.current = self.tokenizer.encode(text, add_special_tokens=False)
            self.answers += 1
        if self.current:
            return self.current.pop(0)
        self.current = None
        return self.end


def tool_call(name: str, **arguments) -> str:
    return f'<tool_call>{json.dumps({"name": name, "arguments": arguments})}</tool_call>'
