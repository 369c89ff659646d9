"""R1 evaluation runs through the evaluation suite's loop (one loop for the project)."""

from PIL import Image

from gmai.eval import runner
from gmai.rl.evaluate import evaluate_questions
from gmai.rl.questions import Question


class EchoBackend:
    name = "echo"

    def __init__(self):
        self.prompts = []

    def generate(self, requests, config=None, batch_size=16):
        self.prompts += [r.prompt for r in requests]
        assert all(im.mode == "RGB" for r in requests for im in r.images)
        return ["<think>looks so</think><answer>B</answer>" if "A. " in r.prompt else "<answer>yes</answer>"
                for r in requests]


def test_evaluate_questions_uses_the_eval_loop_and_counts_failed_images(tmp_path, monkeypatch):
    Image.new("RGB", (6, 6)).save(tmp_path / "a.png")
    questions = [Question("q1", str(tmp_path / "a.png"), "Which?", "B", "choice", "label", options=["cyst", "mass"]),
                 Question("q2", str(tmp_path / "a.png"), "Any lesion?", "no", "closed", "presence"),
                 Question("q3", str(tmp_path / "gone.png"), "Any lesion?", "yes", "closed", "presence")]
    calls = []
    real = runner.generate_predictions
    monkeypatch.setattr(runner, "generate_predictions", lambda *a, **k: calls.append(1) or real(*a, **k))
    backend = EchoBackend()
    result = evaluate_questions(backend, questions, batch_size=2)
    assert calls == [1]
    assert result["correct"] == [True, False, False]  # q3's image is missing: a failed question, wrong
    assert result["failed"][0]["id"] == "q3" and "gone.png" in result["failed"][0]["error"]
    assert result["format_valid"] == 1 / 3
    assert backend.prompts[0] == questions[0].prompt(reasoning=True)  # the exact R1 prompt
    assert result["by_type"]["closed"] == {"n": 2, "accuracy": 0.0}
