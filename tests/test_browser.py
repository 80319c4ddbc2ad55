"""What a notebook user sees: the notebooks run in JupyterLab in a real browser.

nbval runs kernels without a front end, so a progress bar drawn as ``HBox(children=...)``
text, a dropdown that never updates its table or a figure that does not show would pass it.
Here a real JupyterLab server (127.0.0.1, a free port, a random token, a temporary root
holding copies of the notebooks) is driven by headless Chromium (Debian's ``chromium``,
through Playwright's sync API; ``scripts/system-packages.sh test`` installs it) the way a
person uses it: open the notebook, Run > Run All Cells, look at the outputs, use the widgets.

The server gets a fresh, empty result cache: with every review already cached ``analyze``
computes nothing and draws no bar. Each notebook's kernel loads its own engine, so the
notebooks run one at a time and each kernel is shut down before the next notebook opens.
Screenshots of each notebook after its run go to ``out/screenshots/`` (printed at the end).

The classic Notebook 7 interface is not covered: the ``notebook`` package is not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from rk_support import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "out" / "screenshots"
NOTEBOOK_TIMEOUT_MS = 300_000  # one notebook's run, its engine load included
# A kernel that loaded an engine does not exit by itself after a shutdown request (seen here,
# cause not found; a plain script exits at once after unload()): Jupyter kills it after its
# shutdown_wait_time (5 s), with vLLM's processes, which share its process group.
KERNEL_SHUTDOWN_S = 60
WIDTH, HEIGHT = 1400, 1000
# What JupyterLab prints instead of a widget when the widget front end is missing.
WIDGET_AS_TEXT = re.compile(r"HBox\(children=|FloatProgress\(|VBox\(children=|Error displaying widget")


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    server: subprocess.Popen

    def api(self, path: str, method: str = "GET", timeout: float = 30):
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        """Shut every kernel down and wait until its processes (vLLM's included) are gone."""
        processes = psutil.Process(self.server.pid).children(recursive=True)
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE", timeout=KERNEL_SHUTDOWN_S)
        _, alive = psutil.wait_procs(processes, timeout=KERNEL_SHUTDOWN_S)
        for process in alive:  # started by this test's server; never leave an engine behind
            process.kill()
        assert not alive, f"kernel processes still running {KERNEL_SHUTDOWN_S} s after shutdown: {alive}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(folder: Path) -> None:
    """Render every cell (full screenshots, all outputs in the DOM) and ask no news question."""
    for name, values in {
        "notebook-extension/tracker": {"windowingMode": "none"},
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = folder / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _copy_cost_notebook_with_a_given_throughput(target: Path) -> None:
    """The cost notebook with its documented shortcut taken: a given reviews/s.

    Its measurements (an engine load, then a vLLM server start) run in full under nbval;
    here the sliders are what is tested, and the shortcut's branch gets run too, without a
    second engine and server start (about two minutes of this machine).
    """
    notebook = json.loads((ROOT / "notebooks" / "03_cost.ipynb").read_text(encoding="utf-8"))
    settings = [cell for cell in notebook["cells"] if "REVIEWS_PER_S = None" in "".join(cell["source"])]
    assert len(settings) == 1, "the cost notebook's REVIEWS_PER_S setting moved"
    settings[0]["source"] = "".join(settings[0]["source"]).replace("REVIEWS_PER_S = None", "REVIEWS_PER_S = 40.0")
    target.write_text(json.dumps(notebook), encoding="utf-8")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "notebooks"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", root / "01_quickstart.ipynb")
    _copy_cost_notebook_with_a_given_throughput(root / "03_cost.ipynb")
    _write_settings(base / "settings")
    # As a user's JupyterLab: no vLLM log level set, and ipykernel forwards what vLLM's engine
    # processes print (it stops doing so when it sees PYTEST_CURRENT_TEST).
    user_env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "VLLM_LOGGING_LEVEL")}
    env = {
        **user_env,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "REVIEWKIT_CACHE_DIR": str(base / "cache"),  # empty, so analyze computes and draws its bar
        "REVIEWKIT_ACTIVITY_FILE": str(base / "activity.json"),
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
    }
    token, port = secrets.token_hex(16), _free_port()
    log_path = base / "jupyterlab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--allow-root",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    instance = Lab(f"http://127.0.0.1:{port}", token, root, server)
    deadline = time.monotonic() + 90
    while True:
        try:
            instance.api("/api/status")
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (
                f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}"
            )
            time.sleep(0.5)
    yield instance
    try:
        instance.shut_down_kernels()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(
                f"\nbrowser test: screenshots of the notebooks after their run in {SCREENSHOTS}/ "
                f"(JupyterLab's log: {log_path})"
            )


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: run scripts/system-packages.sh test"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _expect():
    from playwright.sync_api import expect

    return expect


@contextlib.contextmanager
def notebook_run(browser, lab: Lab, name: str) -> Iterator:
    """Open the notebook, Run > Run All Cells, wait for the last cell and check that none failed;
    yield the page; screenshot it however the run went, then shut its kernel (and engine) down."""
    expect = _expect()
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    page.set_default_timeout(30_000)
    try:
        # ?reset: a fresh workspace, not the previous notebook's tab (and a kernel for it) again
        page.goto(f"{lab.url}/lab/tree/{name}?reset&token={lab.token}")
        expect(page.locator(".jp-StatusBar-TextItem", has_text="| Idle")).to_be_visible(timeout=120_000)
        expect(page.locator(".jp-NotebookPanel")).to_have_count(1)
        file_browser = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
        if file_browser.count():
            file_browser.click()  # more room for the notebook
        try:
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            busy = page.locator(".jp-CodeCell .jp-InputPrompt", has_text="[*]")
            expect(busy.first).to_be_visible()
            expect(busy).to_have_count(0, timeout=NOTEBOOK_TIMEOUT_MS)
            expect(page.locator(".jp-StatusBar-TextItem", has_text="| Idle")).to_be_visible()
        finally:
            screenshot(page, name)
        check_no_errors(page, lab, name)
        yield page
    finally:
        page.close()
        lab.shut_down_kernels()


def screenshot(page, name: str) -> Path:
    """The whole notebook in one image: JupyterLab scrolls inside its own panel, so the
    viewport is made as tall as the notebook for the shot."""
    scroller = page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer")
    extra = scroller.evaluate("""e => {
        e.scrollTo(0, 0);
        const cells = e.querySelectorAll(".jp-Cell");
        const end = cells[cells.length - 1].getBoundingClientRect().bottom - e.getBoundingClientRect().top;
        return Math.max(0, Math.ceil(end + 40 - e.clientHeight));  // not the blank scroll-past-end space
    }""")
    page.set_viewport_size({"width": WIDTH, "height": min(HEIGHT + extra, 30_000)})
    page.wait_for_timeout(1000)  # relayout and images
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{Path(name).stem}.png"
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    return path


def cell(page, source: str):
    """The code cell whose source contains ``source``."""
    return page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea-editor", has_text=source))


def check_no_errors(page, lab: Lab, name: str) -> None:
    """Every code cell ran, none shows an error or a widget drawn as text, on the page and on disk."""
    expect = _expect()
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    assert prompts and all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts), f"cells not run: {prompts}"
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    errors = [
        text[:1500] for text in outputs if "Traceback" in text or re.search(r"^\w+(Error|Exception):", text, re.M)
    ]
    assert not errors, f"{name}: cells show errors:\n" + "\n---\n".join(errors)
    as_text = [text[:300] for text in outputs if WIDGET_AS_TEXT.search(text)]
    assert not as_text, f"{name}: widgets shown as text: {as_text}"
    page.get_by_role("menuitem", name="File", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Save Notebook\b")).first.click()
    expect(page.locator(".lm-TabBar-tab.jp-mod-dirty")).to_have_count(0)  # saved
    saved = json.loads((lab.root / name).read_text())
    error_outputs = [o for c in saved["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not error_outputs, f"{name}: saved error outputs: {error_outputs}"


def drag_slider(page, slider, fraction: float) -> None:
    """Drag the slider's handle with the mouse to ``fraction`` of its track (past the ends clamps)."""
    track = slider.locator(".noUi-target")
    track.scroll_into_view_if_needed()
    handle, bounds = slider.locator(".noUi-handle").bounding_box(), track.bounding_box()
    y = handle["y"] + handle["height"] / 2
    page.mouse.move(handle["x"] + handle["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(bounds["x"] + fraction * bounds["width"], y, steps=12)
    page.mouse.up()


def test_quickstart_in_jupyterlab(lab, browser):
    expect = _expect()
    with notebook_run(browser, lab, "01_quickstart.ipynb") as page:
        # load() said what it was doing: a status widget that ends "engine ready".
        load = cell(page, "engine = reviewkit.load()")
        expect(load.locator(".jp-OutputArea .widget-html-content", has_text="reviewkit: engine ready")).to_be_visible()
        # ... and nothing else: no vLLM, Triton or PyTorch lines (red stderr) from the kernel or the
        # engine's processes.
        expect(load.locator(".jp-OutputArea-output[data-mime-type^='application/vnd.jupyter.std']")).to_have_count(0)

        # analyze's progress bar is a widget (not text) and ends at 100 %.
        analysis = cell(page, "out = reviewkit.analyze(reviews")
        bar = analysis.locator(".jp-OutputArea .widget-hbox").filter(has=page.locator(".widget-hprogress"))
        expect(bar).to_have_count(1)
        expect(bar.locator(".progress-bar")).to_have_attribute("style", re.compile(r"width: 100%"))
        expect(bar).to_contain_text("100%")
        expect(bar).to_contain_text("48/48")

        # The summary plot shows as an image that loaded.
        plot = cell(page, "reviewkit.plot_summary(summary").locator(".jp-OutputArea img")
        expect(plot).to_have_count(1)
        assert plot.evaluate("img => img.complete && img.naturalWidth > 300 && img.naturalHeight > 200")

        # The dropdown and the slider render, and each changes the table below them.
        explorer = cell(page, "picker = widgets.Dropdown(")
        picker = explorer.locator(".widget-dropdown select")
        slider = explorer.locator(".widget-hslider")
        listing = explorer.locator(".widget-html-content").filter(has=page.locator("table"))
        expect(picker).to_be_visible()
        expect(slider).to_be_visible()
        expect(listing).to_be_visible()
        caption = listing.locator("b")
        before = caption.inner_text()
        options = picker.locator("option").all_inner_texts()
        other = next(o for o in options if o != picker.evaluate("s => s.selectedOptions[0].text"))
        picker.select_option(label=other)
        expect(caption).not_to_have_text(before)
        expect(caption).to_contain_text(other)

        rows = listing.locator("tbody tr")
        drag_slider(page, slider, -0.2)
        expect(slider.locator(".widget-readout")).to_have_text("0.00")
        expect(caption).to_contain_text(">= 0.00")
        all_rows = rows.count()
        drag_slider(page, slider, 1.2)
        expect(slider.locator(".widget-readout")).to_have_text("1.00")
        expect(caption).to_contain_text(">= 1.00")
        assert all_rows > 0 and rows.count() < all_rows, (all_rows, rows.count())


def test_cost_sliders_move_the_figures(lab, browser):
    expect = _expect()
    with notebook_run(browser, lab, "03_cost.ipynb") as page:
        expect(page.locator(".jp-OutputArea-output.jp-RenderedImage img").first).to_be_visible()
        widgets = page.locator(".jp-CodeCell").filter(has=page.locator(".jp-OutputArea .widget-hslider"))
        expect(widgets).to_have_count(1)
        sliders = widgets.locator(".widget-hslider")
        figure = widgets.locator(".jp-OutputArea img").first
        expect(figure).to_be_visible()
        assert sliders.count() >= 2
        for index, fraction in ((0, 1.2), (sliders.count() - 1, -0.2)):  # first slider to max, last to min
            slider = sliders.nth(index)
            readout, src = slider.locator(".widget-readout").inner_text(), figure.get_attribute("src")
            drag_slider(page, slider, fraction)
            expect(slider.locator(".widget-readout")).not_to_have_text(readout)
            expect(figure).not_to_have_attribute("src", src)
            assert figure.evaluate("img => img.complete && img.naturalWidth > 200")
        screenshot(page, "03_cost-after-sliders.ipynb")
