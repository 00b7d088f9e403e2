"""The small mixed corpus of the plugin tests: zh/ja/ko, user metadata, public, ACL with deny."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

BUNDLED = "bundled:multilingual-e5-small"
SUPPORT = ["group:support"]
#: In group:support but denied on "audit-zh": must never see it.
MALLORY = ["group:support", "user:mallory"]

CORPUS: list[dict[str, Any]] = [
    {"id": "pw-zh", "title": "重置密码", "acl": SUPPORT,
     "text": "如何重置密码：打开设置页面，点击“忘记密码”，按邮件中的链接设置新密码。",
     "metadata": {"lang": "zh", "category": "account", "year": 2024}},
    {"id": "pw-ja", "title": "パスワード再設定", "acl": SUPPORT,
     "text": "パスワードを忘れた場合は、設定画面で「パスワードを忘れた」を押し、メールのリンクから新しいパスワードを設定してください。",
     "metadata": {"lang": "ja", "category": "account", "year": 2023}},
    {"id": "pw-ko", "title": "비밀번호 재설정", "acl": SUPPORT,
     "text": "비밀번호를 잊으셨다면 설정 화면에서 비밀번호 찾기를 누르고 이메일 링크로 새 비밀번호를 설정하세요.",
     "metadata": {"lang": "ko", "category": "account", "year": 2022}},
    {"id": "refund-zh", "title": "退货", "acl": SUPPORT,
     "text": "退货请在30天内申请，退款将在7个工作日内退回原支付方式。",
     "metadata": {"lang": "zh", "category": "refund", "year": 2024}},
    {"id": "audit-zh", "title": "密码重置审计", "acl": SUPPORT, "deny": ["user:mallory"],
     "text": "密码重置的内部审计记录：管理员重置密码必须使用硬件密钥登录后台。",
     "metadata": {"lang": "zh", "category": "account", "year": 2024}},
    {"id": "hours-zh", "title": "客服时间", "public": True,
     "text": "客服热线每天9点到18点开放，节假日照常服务。",
     "metadata": {"lang": "zh", "category": "contact", "year": 2021}},
    {"id": "sales-zh", "title": "销售报价", "acl": ["group:sales"],
     "text": "企业版密码管理功能的报价单，仅限销售团队查看。",
     "metadata": {"lang": "zh", "category": "sales", "year": 2024}},
]


def run_async_off_loop(engine: Any, monkeypatch: pytest.MonkeyPatch, call: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``call()`` on a fresh event loop; assert that ``engine.search`` ran on another thread than the loop's."""
    threads: list[threading.Thread] = []
    real_search = engine.search

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return real_search(*args, **kwargs)

    monkeypatch.setattr(engine, "search", spy)

    async def main() -> tuple[Any, threading.Thread]:
        return await call(), threading.current_thread()

    result, loop_thread = asyncio.run(main())
    assert threads and all(t is not loop_thread for t in threads)  # the blocking search ran on a worker thread
    return result
