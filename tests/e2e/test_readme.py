"""The README is a promise: its two commands exist, and its example works."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.processes import REPO, Proc, eventually, free_port, wait_http

README = (REPO / "README.md").read_text()


def test_two_commands_are_make_run_and_make_test_and_ci_runs_the_second() -> None:
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "make test"


def test_the_readme_example_works_on_the_embedded_default(tmp_path: Path) -> None:
    curl = re.search(r"curl -s -XPOST localhost:8000/users .*?-d '(.*?)'", README, re.S)
    payload = json.loads(curl.group(1))
    query_line = re.search(r"curl -s localhost:8000/graphql .*?-d '(.*?)'", README, re.S).group(1)
    port = free_port()
    api = Proc(["serve", "--port", str(port)], {"ATTENDWISE_DATA_DIR": str(tmp_path)}, tmp_path / "api.log").start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", proc=api)
        created = httpx.post(base + "/users", json=payload)
        assert created.status_code == 201
        uid = created.json()["id"]
        body = json.loads(query_line.replace("<id>", uid))
        user = eventually(lambda: httpx.post(base + "/graphql", json=body).json()["data"]["user"])
        assert user["displayName"] == payload["display_name"] and user["timeZone"] == payload["time_zone"]

        login = re.search(r"curl -s -XPOST localhost:8000/auth/token (.*)", README).group(1)
        form = dict(re.findall(r"-d (\w+)='?([^' ]+(?: [^' -][^' ]*)*)'?", login))
        tokens = httpx.post(base + "/auth/token", data=form)
        assert tokens.status_code == 200, (form, tokens.text)
        series_json = re.search(r"curl -s -XPOST localhost:8000/series .*?-d '(.*?)'", README, re.S).group(1)
        series = httpx.post(base + "/series", json=json.loads(series_json.replace("<id>", uid)),
                            headers={"Authorization": f"Bearer {tokens.json()['access_token']}"})
        assert series.status_code == 201, series.text
        promised = re.search(r'# (\{"series_id".*)', README).group(1)
        assert f'"description": "{series.json()["description"]}"' in promised
        assert f'"added": {series.json()["added"]}' in promised

        auth = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
        community = httpx.post(base + "/communities", headers=auth, json=json.loads(
            re.search(r"curl -s -XPOST localhost:8000/communities -H.*?-d '(.*?)'", README, re.S).group(1)))
        assert community.status_code == 201, community.text
        post_json = re.search(r"curl -s -XPOST localhost:8000/communities/<community>/posts .*?-d '(.*?)'",
                              README, re.S).group(1)
        cid = community.json()["id"]
        assert httpx.post(f"{base}/communities/{cid}/posts", headers=auth, json=json.loads(post_json)).status_code == 201
        feed_query = json.loads(re.findall(r"curl -s localhost:8000/graphql -H \"Authorization.*?-d '(.*?)'",
                                           README, re.S)[0])
        feed = eventually(lambda: httpx.post(base + "/graphql", json=feed_query, headers=auth).json()["data"]["feed"]["edges"])
        assert feed[0]["node"]["text"] == json.loads(post_json)["text"]
    finally:
        api.stop()
