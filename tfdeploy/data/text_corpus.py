"""The bundled text corpora: small, SYNTHETIC, generated here from templates with a fixed seed.

Nothing is downloaded. Each generator builds sentences from the word lists
below with ``numpy.random.default_rng(seed)``, so the same seed gives the same
corpus on every machine. The corpora exercise the whole pipeline (reading,
vectorising, training, compressing, exporting, serving) with a signal a small
model can learn in seconds. They are NOT a benchmark of language
understanding: accuracy or recall on them says that the pipeline works and how
compression changes a model, not how a model does on real news or support
tickets.

- `sentiment_corpus`: financial-news headlines labelled negative / neutral /
  positive. Each headline has one cue phrase of its class, plus company,
  quarter and filler words shared by every class; ``label_noise`` of the
  labels are flipped on purpose so accuracy stays below 100 %.
- `sentiment_stream`: timestamped headlines whose negative share jumps inside
  three windows of different lengths (the monitoring recipe replays it).
- `qa_corpus`: customer-service questions (several paraphrases, with
  synonyms, per intent; half share no content word with their answer) and
  one answer per intent.
- `recommendation_corpus`: items with topic texts, users with one or two
  favourite topics and a taste group (whose favourite items they share), and
  the items each user interacted with.
"""

import json
import os

import numpy as np

COMPANIES = ["Acme Corp", "Northwind", "Globex", "Initech", "Umbrella Bank", "Stark Industries",
             "Wayne Holdings", "Hooli", "Vandelay Imports", "Soylent", "Cyberdyne", "Tyrell",
             "Wonka Foods", "Oscorp", "Aperture Labs", "Massive Dynamic"]
CUES = {
    "negative": ["misses earnings estimates", "cuts full year guidance", "shares plunge",
                 "faces regulatory probe", "announces mass layoffs", "is downgraded by analysts",
                 "reports widening losses", "warns of weak demand", "defaults on bond payment",
                 "suspends its dividend", "recalls faulty products", "loses major contract"],
    "neutral": ["schedules its earnings call", "appoints a new board member",
                "will present at an investor conference", "holds its annual meeting",
                "files its quarterly report", "moves headquarters to a new office",
                "confirms the date of its shareholder vote", "renames its retail division",
                "publishes its sustainability report", "updates its corporate website"],
    "positive": ["beats earnings expectations", "raises full year guidance", "shares surge",
                 "wins regulatory approval", "announces record revenue",
                 "is upgraded by analysts", "reports strong demand", "expands into new markets",
                 "raises its dividend", "signs a major contract", "posts higher margins",
                 "launches a successful product"],
}
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
FILLERS = ["today", "in early trading", "after the bell", "this quarter", "according to sources",
           "analysts said", "on monday", "on friday", "in a statement", "amid market volatility",
           "as investors watch", "ahead of the holidays"]
QUARTERS = ["q1", "q2", "q3", "q4"]


def _headline(rng, label):
    company = COMPANIES[rng.integers(len(COMPANIES))]
    cue = CUES[label][rng.integers(len(CUES[label]))]
    parts = [company, cue]
    if rng.random() < 0.7:
        parts.append(FILLERS[rng.integers(len(FILLERS))])
    if rng.random() < 0.4:
        parts.insert(0, QUARTERS[rng.integers(4)].upper() + ":")
    text = " ".join(parts)
    return text[0].upper() + text[1:]


def sentiment_corpus(n=1200, seed=0, label_noise=0.05):
    """Synthetic financial headlines with sentiment labels.

    Args:
        n: number of headlines. Defaults to 1200.
        seed: generator seed. Defaults to 0.
        label_noise: share of labels replaced by a random other label.
            Defaults to 0.05.

    Returns:
        ``(texts, labels)``: lists of str (labels are "negative", "neutral",
        "positive").
    """
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(int(n)):
        label = SENTIMENT_LABELS[rng.integers(3)]
        texts.append(_headline(rng, label))
        if rng.random() < label_noise:
            label = SENTIMENT_LABELS[(SENTIMENT_LABELS.index(label) + 1 + rng.integers(2)) % 3]
        labels.append(label)
    return texts, labels


def sentiment_stream(n=1000, seed=1, start="2026-03-02T09:00:00", step_seconds=30,
                     base_negative=0.2, surge_negative=0.75,
                     surge=((0.15, 0.22), (0.45, 0.6), (0.8, 0.84))):
    """A timestamped headline stream whose negative share surges inside windows.

    Args:
        n: number of headlines. Defaults to 1000.
        seed: generator seed. Defaults to 1.
        start: ISO timestamp of the first headline.
        step_seconds: seconds between headlines. Defaults to 30.
        base_negative: share of negative headlines outside the surges.
        surge_negative: share of negative headlines inside a surge.
        surge: one ``(begin, end)`` window as fractions of the stream, or a
            sequence of them; a window may carry its own negative share as a
            third value. Defaults to three windows of 70, 150 and 40 headlines
            (the last one shorter than a 40-headline alert window's worth of
            evidence at 50 %, so a monitor can miss it).

    Returns:
        A list of dicts ``{"time", "text", "label"}`` in time order.
    """
    windows = [surge] if isinstance(surge[0], (int, float)) else list(surge)
    windows = [(w[0], w[1], w[2] if len(w) > 2 else surge_negative) for w in windows]
    rng = np.random.default_rng(seed)
    t0 = np.datetime64(start, "s")
    out = []
    for i in range(int(n)):
        p_neg = next((share for begin, end, share in windows if begin * n <= i < end * n),
                     base_negative)
        if rng.random() < p_neg:
            label = "negative"
        else:
            label = "positive" if rng.random() < 0.5 else "neutral"
        out.append({"time": str(t0 + np.timedelta64(i * int(step_seconds), "s")),
                    "text": _headline(rng, label), "label": label})
    return out


_ACTIONS = {  # canonical verb (the answer's word) first, then synonyms used in questions
    "reset": ["reset", "change", "recover", "replace"],
    "close": ["close", "cancel", "shut down", "terminate"],
    "open": ["open", "create", "set up", "start"],
    "update": ["update", "edit", "modify", "correct"],
    "check": ["check", "see", "view", "look at"],
    "dispute": ["dispute", "contest", "report a problem with", "challenge"],
}
_OBJECTS = {
    "password": ["password", "login", "passcode", "pin"],
    "account": ["account", "profile", "membership", "subscription"],
    "card": ["card", "debit card", "credit card", "visa"],
    "payment": ["payment", "bill payment", "transfer", "remittance"],
    "statement": ["statement", "monthly statement", "invoice", "bank summary"],
    "address": ["address", "mailing address", "home address", "residence"],
    "loan": ["loan", "mortgage", "credit line", "financing"],
}
_Q_TEMPLATES = ["how do i {a} my {o}", "i want to {a} my {o}", "can you help me {a} my {o}",
                "where can i {a} the {o}", "what is the way to {a} a {o}",
                "is it possible to {a} my {o} online", "please help, need to {a} {o}",
                "{a} {o} how"]
_PLACES = {"password": "Security", "account": "Profile", "card": "Cards", "payment": "Payments",
           "statement": "Documents", "address": "Profile", "loan": "Borrowing"}


def _words(text):
    return set("".join(c if c.isalnum() else " " for c in text.lower()).split())


def content_words(answers):
    """Each answer's words minus the words every answer has (its *content* words)."""
    words = [_words(a) for a in answers]
    common = set.intersection(*words) if words else set()
    return [w - common for w in words]


def qa_corpus(paraphrases=8, seed=0, no_overlap=0.5):
    """Synthetic customer-service questions and answers (one answer per intent).

    Intents are every (action, object) pair (42); each gets ``paraphrases``
    questions built from templates and synonyms, and one answer text. A share
    ``no_overlap`` of the questions are paraphrases that share no content word
    with their answer at least (only synonyms: "how do i recover my passcode" for the
    answer "To reset your password, open Security ..."): lexical matching
    (TF-IDF, BM25) cannot find their answer, a model that learned the synonyms
    from the training questions can.

    Args:
        paraphrases: questions per intent. Defaults to 8.
        seed: generator seed. Defaults to 0.
        no_overlap: share of questions sharing no content word with their
            answer (see `content_words`). Defaults to 0.5.

    Returns:
        ``(questions, answer_ids, answers)``: questions (list of str), the index
        of each question's answer (int64 array), and the answers (list of str).
    """
    rng = np.random.default_rng(seed)
    answers, questions, answer_ids = [], [], []
    for action in _ACTIONS:
        for obj in _OBJECTS:
            answers.append(f"To {action} your {obj}, open {_PLACES[obj]} in the app, choose "
                           f"{obj} and then {action}; we confirm by email within one day.")
    content = content_words(answers)
    index = 0
    for action, a_syn in _ACTIONS.items():
        for obj, o_syn in _OBJECTS.items():
            for _ in range(int(paraphrases)):
                hard = rng.random() < no_overlap
                while True:
                    template = _Q_TEMPLATES[rng.integers(len(_Q_TEMPLATES))]
                    q = template.format(a=a_syn[rng.integers(len(a_syn))],
                                        o=o_syn[rng.integers(len(o_syn))])
                    if not hard or not _words(q) & content[index]:
                        break
                questions.append(q + ("?" if rng.random() < 0.6 else ""))
                answer_ids.append(index)
            index += 1
    order = rng.permutation(len(questions))
    return ([questions[i] for i in order], np.asarray(answer_ids, np.int64)[order], answers)


_TOPICS = {
    "running": ["trail", "running", "shoes", "marathon", "sprint", "jogging"],
    "cooking": ["kitchen", "recipe", "chef", "baking", "spices", "cookware"],
    "gaming": ["console", "controller", "multiplayer", "arcade", "quest", "pixel"],
    "gardening": ["garden", "seeds", "compost", "flowers", "pruning", "greenhouse"],
    "photography": ["camera", "lens", "tripod", "portrait", "shutter", "zoom"],
    "music": ["guitar", "piano", "headphones", "vinyl", "concert", "melody"],
    "travel": ["luggage", "passport", "hotel", "backpack", "flight", "island"],
    "reading": ["novel", "poetry", "library", "author", "paperback", "chapter"],
}
_ITEM_WORDS = ["deluxe", "classic", "pro", "mini", "starter", "premium", "compact", "essential",
               "set", "kit", "edition", "guide"]


def recommendation_corpus(num_users=200, num_items=160, interactions=12, seed=0, groups=8,
                          group_share=0.7, group_items=12):
    """Synthetic users, item texts and interactions for two-tower retrieval.

    Each item belongs to one topic and its text mixes three of that topic's
    words with two generic product words. Each user likes one or two topics
    and belongs to one of ``groups`` taste groups; each group favours
    ``group_items`` items drawn from the whole catalogue. A share
    ``group_share`` of a user's interactions are items their group favours,
    the rest are items of the user's topics (85 %) or random; a user picks an
    item at most once. Topic counts find a user's topics; the group's
    favourites (a collaborative signal: "users like you bought") can only be
    learned from who interacted with what.

    Args:
        num_users: users. Defaults to 200.
        num_items: items. Defaults to 160.
        interactions: interactions per user. Defaults to 12.
        seed: generator seed. Defaults to 0.
        groups: taste groups. Defaults to 8.
        group_share: share of interactions from the group's favourites.
            Defaults to 0.7.
        group_items: items each group favours. Defaults to 12.

    Returns:
        A dict with ``items`` (list of str texts), ``item_topics`` (int array),
        ``topic_names``, ``users`` (user ids ``"user_0" ...``), ``pairs`` (int
        array of ``(user_index, item_index)`` rows, in interaction order per user).
    """
    rng = np.random.default_rng(seed)
    topics = list(_TOPICS)
    item_topics = rng.integers(len(topics), size=int(num_items))
    items = []
    for i, t in enumerate(item_topics):
        words = list(rng.choice(_TOPICS[topics[t]], size=3, replace=False))
        words += list(rng.choice(_ITEM_WORDS, size=2, replace=False))
        rng.shuffle(words)
        items.append(" ".join(words) + f" no {i}")
    favourites = [rng.choice(int(num_items), size=min(int(group_items), int(num_items)),
                             replace=False) for _ in range(int(groups))]
    everything = np.arange(int(num_items))
    pairs = []
    for u in range(int(num_users)):
        liked = rng.choice(len(topics), size=1 + int(rng.random() < 0.5), replace=False)
        group = favourites[rng.integers(int(groups))]
        pool = np.flatnonzero(np.isin(item_topics, liked))
        seen = set()
        for _ in range(int(interactions)):
            if rng.random() < group_share:
                choice = group
            elif rng.random() < 0.85 and pool.size:
                choice = pool
            else:
                choice = everything
            for options in (choice, pool, everything):  # no item bought twice
                fresh = [int(i) for i in options if int(i) not in seen]
                if fresh:
                    break
            item = int(rng.choice(fresh))
            seen.add(item)
            pairs.append((u, item))
    return {"items": items, "item_topics": item_topics, "topic_names": topics,
            "users": [f"user_{u}" for u in range(int(num_users))],
            "pairs": np.asarray(pairs, np.int64)}


def _write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def write_sentiment_corpus(directory=os.path.join("data", "sentiment"), n=1200, seed=0,
                           test_fraction=0.25):
    """Write the synthetic sentiment corpus and stream in the formats `text_dataset` reads.

    Layout: ``DIR/train/<label>/<n>.txt`` (Keras's text directory layout),
    ``DIR/test.jsonl`` and ``DIR/test.csv`` (``text``, ``label``), and
    ``DIR/stream.jsonl`` (``time``, ``text``, ``label``) for monitoring.

    Returns:
        The directory path.
    """
    import csv

    texts, labels = sentiment_corpus(n, seed)
    n_test = int(len(texts) * test_fraction)
    train_dir = os.path.join(directory, "train")
    for label in SENTIMENT_LABELS:
        os.makedirs(os.path.join(train_dir, label), exist_ok=True)
    for i, (t, label) in enumerate(zip(texts[n_test:], labels[n_test:])):
        with open(os.path.join(train_dir, label, f"{i:05d}.txt"), "w", encoding="utf-8") as f:
            f.write(t)
    test = [{"text": t, "label": label} for t, label in zip(texts[:n_test], labels[:n_test])]
    _write_jsonl(os.path.join(directory, "test.jsonl"), test)
    with open(os.path.join(directory, "test.csv"), "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(test)
    _write_jsonl(os.path.join(directory, "stream.jsonl"), sentiment_stream(seed=seed + 1))
    return directory


def write_qa_corpus(directory=os.path.join("data", "qa"), paraphrases=8, seed=0,
                    no_overlap=0.5):
    """Write ``DIR/pairs.jsonl`` (``question``, ``answer``) from `qa_corpus`; returns DIR."""
    questions, ids, answers = qa_corpus(paraphrases, seed, no_overlap)
    os.makedirs(directory, exist_ok=True)
    _write_jsonl(os.path.join(directory, "pairs.jsonl"),
                 [{"question": q, "answer": answers[i]} for q, i in zip(questions, ids)])
    return directory


def write_recommendation_corpus(directory=os.path.join("data", "recommend"), seed=0, **kwargs):
    """Write ``DIR/items.jsonl`` (``item``, ``text``, ``topic``) and ``DIR/interactions.csv``
    (``user``, ``item``) from `recommendation_corpus`; returns DIR."""
    import csv

    corpus = recommendation_corpus(seed=seed, **kwargs)
    os.makedirs(directory, exist_ok=True)
    _write_jsonl(os.path.join(directory, "items.jsonl"),
                 [{"item": f"item_{i}", "text": t,
                  "topic": corpus["topic_names"][corpus["item_topics"][i]]}
                 for i, t in enumerate(corpus["items"])])
    with open(os.path.join(directory, "interactions.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "item"])
        for u, i in corpus["pairs"]:
            writer.writerow([corpus["users"][u], f"item_{i}"])
    return directory
