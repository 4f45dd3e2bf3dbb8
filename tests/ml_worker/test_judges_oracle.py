"""OracleJudge: the simulated Bradley-Terry rater and its hidden reward."""

from __future__ import annotations

import math

import pytest
import torch

from ml_worker.core.judges import Judge, JudgeConfigError, JudgeQuery, JudgeResult, build_judge
from ml_worker.core.judges.oracle import (
    HashingEncoder,
    OracleJudge,
    OracleWeights,
    is_truncated,
    length_band,
    length_penalty,
    minilm_model_dir,
    repeated_ngram_ratio,
    word_f1,
)

PROMPT = "What is the capital city of France and why is it famous?"
GOOD = "The capital city of France is Paris, famous for its art, museums and the Eiffel Tower."


def make_oracle(**kwargs) -> OracleJudge:
    return OracleJudge(embed=HashingEncoder(32), **kwargs)


def sentences(n: int, seed: int = 0) -> list[str]:
    vocab = (
        "paris france capital tower art river city museum bread wine history king revolution "
        "science math music garden train school market bridge summer winter ocean forest"
    ).split()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 25, (1,), generator=gen))
        idx = torch.randint(0, len(vocab), (k,), generator=gen)
        text = " ".join(vocab[i] for i in idx)
        out.append(text.capitalize() + ("." if bool(torch.rand(1, generator=gen) < 0.7) else ""))
    return out


# ----------------------------------------------------------------------------- results


def test_it_rejects_an_invalid_result_that_carries_a_probability() -> None:
    with pytest.raises(ValueError):
        JudgeResult(0.5, None, "malformed")
    with pytest.raises(ValueError):
        JudgeResult(None, None, None)
    with pytest.raises(ValueError):
        JudgeResult(1.5, "A", None)
    with pytest.raises(ValueError):
        JudgeResult(0.5, "C", None)
    bad = JudgeResult.invalid("refusal")
    assert not bad.valid and bad.prob_a is None and bad.choice is None


# ----------------------------------------------------------------------------- sampling


def queries(n: int, seed: int = 0) -> list[JudgeQuery]:
    a, b = sentences(n, seed), sentences(n, seed + 1)
    return [JudgeQuery(PROMPT, x, y) for x, y in zip(a, b, strict=True)]


def test_it_is_deterministic_given_a_seed() -> None:
    qs = queries(200)
    first = make_oracle().judge(qs, seed=7)
    again = make_oracle().judge(qs, seed=7)
    other = make_oracle().judge(qs, seed=8)
    assert [r.choice for r in first] == [r.choice for r in again]
    assert [r.prob_a for r in first] == [r.prob_a for r in other]
    assert [r.choice for r in first] != [r.choice for r in other]


def test_it_replays_its_own_stream_from_the_constructor_seed() -> None:
    qs = queries(100)
    judge_1, judge_2 = make_oracle(seed=3), make_oracle(seed=3)
    calls_1 = [[r.choice for r in judge_1.judge(qs)] for _ in range(2)]
    calls_2 = [[r.choice for r in judge_2.judge(qs)] for _ in range(2)]
    assert calls_1 == calls_2
    assert calls_1[0] != calls_1[1]  # the generator advances between calls


@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0])
def test_its_probability_is_the_sigmoid_of_the_reward_difference(temperature: float) -> None:
    judge = make_oracle(temperature=temperature)
    qs = queries(50)
    results = judge.judge(qs, seed=0)
    r_a = judge.reward([q.prompt for q in qs], [q.response_a for q in qs])
    r_b = judge.reward([q.prompt for q in qs], [q.response_b for q in qs])
    expected = torch.sigmoid((r_a - r_b) / temperature)
    got = torch.tensor([r.prob_a for r in results])
    torch.testing.assert_close(got, expected)
    assert all(r.valid and r.choice in ("A", "B") for r in results)


def test_its_choices_follow_its_probability() -> None:
    judge = make_oracle(temperature=3.0)
    q = JudgeQuery(PROMPT, GOOD, "Paris is in France and the tower is tall")
    results = judge.judge([q] * 4000, seed=1)
    p = results[0].prob_a
    assert 0.1 < p < 0.9  # a genuinely noisy comparison
    freq = sum(r.choice == "A" for r in results) / len(results)
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / len(results))


def test_it_is_noiseless_at_temperature_zero_and_ties_inside_the_margin() -> None:
    judge = make_oracle(temperature=0.0)
    q = JudgeQuery(PROMPT, GOOD, "banana " * 40)
    assert [r.choice for r in judge.judge([q] * 50, seed=0)] == ["A"] * 50
    assert judge.judge([q.swapped()], seed=0)[0].prob_a == 0.0
    same = make_oracle(tie_margin=0.1).judge([JudgeQuery(PROMPT, GOOD, GOOD)], seed=0)[0]
    assert same.choice == "tie" and same.prob_a == 0.5


# ----------------------------------------------------------------------------- the reward terms


def reward_of(judge: OracleJudge, response: str, reference: str | None = None, prompt=PROMPT):
    return float(judge.reward([prompt], [response], [reference]))


def test_it_penalizes_repetition() -> None:
    judge = make_oracle()
    repeated = "The capital city of France is Paris. " * 4
    once = "The capital city of France is Paris, famous for art. It has the Eiffel Tower and more."
    assert repeated_ngram_ratio(repeated) > 0.5 > repeated_ngram_ratio(once) == 0.0
    terms_rep = judge.reward_terms([PROMPT], [repeated])
    assert float(terms_rep["repetition"]) < -2.0
    assert float(judge.reward_terms([PROMPT], [once])["repetition"]) == 0.0


def test_it_penalizes_truncation() -> None:
    judge = make_oracle()
    cut = "The capital city of France is Paris, famous for its art, museums and the"
    assert is_truncated(cut) and not is_truncated(GOOD)
    assert not is_truncated('He said "yes."') and not is_truncated("```py\nx = 1\n```")
    assert is_truncated("```py\nx = 1\n")
    assert reward_of(judge, cut + " Eiffel Tower.") - reward_of(judge, cut) > 1.0


def test_it_rewards_agreement_with_the_reference() -> None:
    judge = make_oracle()
    reference = "Paris is the capital of France."
    right = "The capital of France is Paris."
    wrong = "The capital of France is Lyon."
    assert word_f1(right, reference) > word_f1(wrong, reference)
    assert reward_of(judge, right, reference) > reward_of(judge, wrong, reference)
    terms = judge.reward_terms([PROMPT, PROMPT], [right, right], [reference, None])
    assert float(terms["reference_overlap"][0]) > 0.0
    assert float(terms["reference_overlap"][1]) == 0.0  # no reference: the term is absent
    assert float(terms["reference_semantic"][1]) == 0.0


def test_it_penalizes_irrelevance() -> None:
    judge = make_oracle()
    off_topic = "Winter gardens need bread, music and a summer train to the ocean market."
    assert reward_of(judge, GOOD) - reward_of(judge, off_topic) > 1.0
    terms = judge.reward_terms([PROMPT, PROMPT], [GOOD, off_topic])
    assert float(terms["relevance"][0]) > float(terms["relevance"][1])


def test_it_penalizes_a_length_outside_the_prompt_band() -> None:
    assert length_band("Answer briefly: is water wet?") == (1.0, 40.0)
    assert length_band("Explain how a bridge carries load.")[0] == 30.0
    assert length_band("Hello?", reference="one two three four five six") == (2.0, 28.0)
    assert length_penalty(10, (5.0, 150.0)) == 0.0
    assert length_penalty(300, (5.0, 150.0)) == pytest.approx(math.log(2))
    judge = make_oracle()
    prompt = "Briefly: what is the capital city of France?"
    short = "The capital city of France is Paris."
    rambling = " ".join(f"Paris is the capital city of France, fact {i}." for i in range(30))
    terms = judge.reward_terms([prompt, prompt], [short, rambling])
    assert float(terms["length"][0]) == 0.0 > float(terms["length"][1])


def test_it_penalizes_refusals_and_empty_answers() -> None:
    judge = make_oracle()
    refusal = "I'm sorry, but I can't help with the capital city of France."
    assert reward_of(judge, GOOD) > reward_of(judge, refusal)
    assert reward_of(judge, GOOD) - reward_of(judge, "   ") > 4.0
    assert float(judge.reward_terms([PROMPT], [refusal])["refusal"]) == -OracleWeights().refusal


def test_its_reward_is_not_linear_in_the_embeddings() -> None:
    # A linear probe on [e(prompt), e(response), 1] (what a linear head on frozen features
    # could represent at best) cannot reproduce the oracle's reward, even on its training set.
    enc = HashingEncoder(16)
    judge = OracleJudge(embed=enc)
    prompts = sentences(400, seed=10)
    responses = sentences(400, seed=11)
    reward = judge.reward(prompts, responses).double()
    feats = torch.cat([enc(prompts), enc(responses), torch.ones(400, 1)], dim=1).double()
    coef = torch.linalg.lstsq(feats, reward[:, None]).solution
    resid = reward - (feats @ coef)[:, 0]
    r2 = 1 - resid.var() / reward.var()
    assert r2 < 0.9


# ----------------------------------------------------------------------------- plumbing


class CountingEncoder(HashingEncoder):
    def __init__(self) -> None:
        super().__init__(16)
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.seen.extend(texts)
        return super().__call__(texts)


def test_it_encodes_each_distinct_text_once() -> None:
    enc = CountingEncoder()
    judge = OracleJudge(embed=enc)
    qs = [JudgeQuery(PROMPT, GOOD, "Paris."), JudgeQuery(PROMPT, "Paris.", GOOD)]
    judge.judge(qs, seed=0)
    judge.judge(qs, seed=1)
    assert sorted(enc.seen) == sorted([PROMPT, GOOD, "Paris."])


def test_it_bounds_its_embedding_cache() -> None:
    enc = CountingEncoder()
    judge = OracleJudge(embed=enc, cache_size=2)
    before = judge.reward([PROMPT, PROMPT], [GOOD, "Paris."])  # 3 texts, cache keeps 2
    assert len(judge._cache) == 2
    after = judge.reward([PROMPT, PROMPT], [GOOD, "Paris."])
    torch.testing.assert_close(before, after)
    assert len(enc.seen) == 4  # the evicted text was encoded again, the others were not


def test_it_is_built_from_a_config_and_rejects_typos() -> None:
    judge = build_judge({"kind": "oracle", "temperature": 0.5, "encoder": "hashing", "seed": 4})
    assert isinstance(judge, OracleJudge) and judge.temperature == 0.5 and judge.seed == 4
    assert isinstance(judge, Judge)
    assert "T=0.5" in judge.judge_id
    with pytest.raises(JudgeConfigError, match="temprature"):
        build_judge({"kind": "oracle", "temprature": 0.5})
    with pytest.raises(JudgeConfigError, match="unknown judge kind"):
        build_judge({"kind": "oracel"})
    with pytest.raises(JudgeConfigError):
        build_judge({"kind": "oracle", "weights": {"relevanse": 1.0}})
    with pytest.raises(JudgeConfigError):
        OracleJudge(temperature=-1.0, embed=HashingEncoder())


@pytest.fixture(scope="module")
def minilm_oracle() -> OracleJudge:
    return OracleJudge(temperature=0.5)  # default encoder: the packaged all-MiniLM-L6-v2


def test_it_scores_with_the_real_minilm_encoder(minilm_oracle: OracleJudge) -> None:
    assert minilm_model_dir().name == "model"
    emb = minilm_oracle.embed(["The capital of France is Paris.", "Paris is France's capital."])
    assert emb.shape == (2, 384)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    assert float(emb[0] @ emb[1]) > 0.7
    texts = [
        "A much longer sentence about rivers, bridges and trains.",
        "Short.",
        "Mid length one.",
    ]
    batched = minilm_oracle.embed(texts)  # batched by length, returned in input order
    single = torch.cat([minilm_oracle.embed([t]) for t in texts])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    prompt = "What is the capital of France?"
    reference = "Paris is the capital of France."
    r = minilm_oracle.reward(
        [prompt] * 3,
        [
            "The capital of France is Paris.",
            "I enjoy cooking soup with turtles.",
            "The capital of France is Lyon.",
        ],
        [reference] * 3,
    )
    assert float(r[0]) > float(r[2]) > float(r[1])
