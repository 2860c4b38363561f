"""Ordinary prompts: what a model's normal is fitted on when the user gives none, and a
separately written set to evaluate a baseline's false-alarm rate on.

``FIT_PROMPTS`` (300): 40 everyday topics x 4 question forms (explain, list facts, how does it
work, why does it matter), 40 varied requests (how-to, differences, short poems, tips, what a job
is, definitions) as chat questions, and 70 plain-text openings of every length to continue,
interleaved so that any prefix holds every kind in proportion. ``EVALUATION_PROMPTS`` (60): written apart from those — other wordings and other
subjects (how-to requests, comparisons, definitions, advice, short continuations) — so that a
false-alarm rate measured on them is not measured on the fitting questions. Chat prompts are
plain user turns; :func:`chat_or_plain` applies the tokenizer's chat template when it has one.
"""

from __future__ import annotations

from typing import Any

_TOPICS = (
    "the water cycle", "volcanoes", "photosynthesis", "the moon", "rainbows", "honey bees", "the human heart",
    "electric cars", "the internet", "bread baking", "the Roman Empire", "coral reefs", "earthquakes", "vaccines",
    "solar panels", "the printing press", "penguins", "the Amazon rainforest", "chess", "jazz music", "recycling",
    "the stock market", "glaciers", "black holes", "coffee", "the Olympic Games", "bicycles", "sleep",
    "tea ceremonies", "libraries", "wind turbines", "the Great Wall of China", "octopuses", "thunderstorms",
    "the piano", "maps", "deserts", "the immune system", "lighthouses", "paper money",
)
_FORMS = (
    "Explain {} in simple terms.",
    "What are three interesting facts about {}?",
    "How does {} work?",
    "Why is {} important?",
)
_OPENINGS = (
    "Once upon a time, in a small village by the sea,", "The old clock in the hallway had stopped at midnight, and",
    "When Maya opened the letter, she", "The rain had not stopped for three days, so the children",
    "In the year 2150, the first city on Mars", "The detective looked at the muddy footprints and",
    "Every morning, the baker woke up before sunrise to", "The garden behind the house was full of",
    "On the first day of school, Tom", "The mountain trail was steep, but the hikers",
    "A good breakfast is important because", "The history of the bicycle begins in",
    "Cities around the world are planting more trees because", "Learning a second language can",
    "The best way to prepare for an exam is to", "Autumn is my favourite season because",
    "The museum's newest exhibit shows", "Scientists studying the deep ocean have found that",
    "My grandmother always said that", "The train left the station exactly on time, and",
    "After the storm, the beach was covered with", "The little robot rolled into the kitchen and",
    "It was the coldest winter anyone could remember;", "The market was busy with people selling",
    "Writing a good story starts with", "The first thing you notice about the island is",
    "When the lights went out, everyone in the theatre", "The recipe calls for flour, eggs and",
    "Farmers in the valley grow", "The library was quiet except for",
    "The festival begins every year when", "A healthy habit that anyone can start today is",
    "The cat sat on the windowsill, watching", "Our town's river used to be polluted, but",
    "The astronaut looked down at the Earth and", "Good teamwork depends on",
    "The old bridge across the river was built in", "The smell of fresh bread filled the street as",
    "The first computers were so large that", "At the edge of the forest stood a cabin where",
)

_TASKS = ("boil an egg", "tie a tie", "plant tomatoes", "fix a flat bicycle tyre", "write a shopping list",
          "clean a laptop keyboard", "learn to juggle", "start a vegetable garden", "make a paper aeroplane",
          "choose a good book", "train a puppy to sit", "keep bread fresh", "plan a picnic", "wash a wool sweater",
          "study for a history test", "set up a fish tank", "make lemonade", "fold a fitted sheet",
          "prepare for a marathon", "organise a bookshelf")
_PAIRS = (("a frog", "a toad"), ("a virus", "a bacterium"), ("a violin", "a viola"), ("a hurricane", "a tornado"),
          ("baking soda", "baking powder"), ("a moth", "a butterfly"), ("a crocodile", "an alligator"),
          ("a planet", "a star"), ("a city", "a town"), ("weather", "seasons"))
_POEMS = ("autumn leaves", "a quiet morning", "the city at night", "an old dog", "the first snow", "a lighthouse",
          "a train journey", "a summer storm", "the stars", "a kitchen garden")
_TIPS = ("public speaking", "keeping a diary", "learning to swim", "saving energy at home", "making new friends",
         "running a bake sale", "drawing faces", "taking better photos", "staying calm before an exam",
         "packing a suitcase")
_JOBS = ("an architect", "a pharmacist", "a beekeeper", "a librarian", "an electrician", "a park ranger",
         "a translator", "a baker", "a pilot", "a marine biologist")
_WORDS = ("gravity", "democracy", "friction", "a metaphor", "an ecosystem", "inflation", "a symphony", "erosion",
          "a constellation", "a glacier")
_SHORT = ("The cat", "It was late.", "Tomorrow we will", "The soup smelled of", "Nobody expected the",
          "In the garden,", "The letter said:", "After lunch, the", "He smiled and", "Rain again,",
          "The robot said", "Our teacher told us that", "Once, long ago,", "The river", "On Monday morning",
          "The best thing about summer is", "She wrote:", "The map showed", "Under the bridge", "At midnight the",
          "My brother likes", "The orchestra began", "Snow covered the", "The shopkeeper", "Far away, a",
          "The kitten chased", "When I grow up, I want to", "The bus was late, so", "Grandpa's old radio",
          "The island had no")
_VARIED_CHAT: tuple[tuple[str, bool], ...] = tuple(
    [(f"How do I {t}?", True) for t in _TASKS]
    + [(f"What is the difference between {a} and {b}?", True) for a, b in _PAIRS]
    + [(f"Write a short poem about {t}.", True) for t in _POEMS]
    + [(f"Give me three tips for {t}.", True) for t in _TIPS]
    + [(f"What does {j} do?", True) for j in _JOBS]
    + [(f"Define {w}.", True) for w in _WORDS]
)
_QUESTIONS = tuple((form.format(topic), True) for topic in _TOPICS for form in _FORMS)



def _interleave(*groups: tuple[tuple[str, bool], ...]) -> tuple[tuple[str, bool], ...]:
    """The groups merged so that every prefix holds each group in proportion to its size (item
    ``i`` of a group of ``n`` sits at fraction ``(i + 0.5) / n``; ties keep the group order)."""
    keyed = [((i + 0.5) / len(g), k, item) for k, g in enumerate(groups) for i, item in enumerate(g)]
    return tuple(item for _, _, item in sorted(keyed, key=lambda x: (x[0], x[1])))


FIT_PROMPTS: tuple[tuple[str, bool], ...] = _interleave(
    _QUESTIONS, _VARIED_CHAT, tuple((t, False) for t in _SHORT), tuple((t, False) for t in _OPENINGS))
"""(text, is_chat) pairs, 300: 160 topic questions in four forms, 40 varied requests (how-to,
differences, short poems, tips, jobs, definitions), 30 short and 40 longer plain-text openings,
interleaved so that any prefix (``fit_baseline`` uses the first 220 by default) holds every kind
in proportion: a baseline fitted on a prefix has seen chat questions and plain text of every
length."""

EVALUATION_PROMPTS: tuple[tuple[str, bool], ...] = (
    ("How do I make a cup of green tea?", True),
    ("What is the difference between weather and climate?", True),
    ("Can you give me tips for a job interview?", True),
    ("Describe a sunset at the beach.", True),
    ("What does a veterinarian do?", True),
    ("How can I save money on groceries?", True),
    ("Summarize the story of Cinderella.", True),
    ("What is a prime number?", True),
    ("Why do leaves change colour in autumn?", True),
    ("Compare cats and dogs as pets.", True),
    ("What should I pack for a weekend camping trip?", True),
    ("How do airplanes stay in the air?", True),
    ("Write a short poem about the ocean.", True),
    ("What is the capital of Japan and what is it known for?", True),
    ("Give me a simple recipe for pancakes.", True),
    ("How do I start learning to play the guitar?", True),
    ("What are the benefits of walking every day?", True),
    ("Explain what a budget is to a teenager.", True),
    ("What is the tallest animal in the world?", True),
    ("How should I care for a houseplant?", True),
    ("What happens when water boils?", True),
    ("Suggest a name for a friendly robot.", True),
    ("How many continents are there, and which is the largest?", True),
    ("What makes a good friend?", True),
    ("Describe how a letter gets delivered by the post office.", True),
    ("What is the role of a referee in football?", True),
    ("Why is the ocean salty?", True),
    ("What are some fun things to do on a rainy day?", True),
    ("How does a refrigerator keep food cold?", True),
    ("Tell me about the planet Saturn.", True),
    ("What is kindness?", True),
    ("How do I write a thank-you note?", True),
    ("What is the difference between a lake and a pond?", True),
    ("Why do we have seasons?", True),
    ("Give three tips for staying focused while studying.", True),
    ("What do firefighters need to know?", True),
    ("How are rainbows and prisms related?", True),
    ("What is a healthy lunch for a child?", True),
    ("Explain what a museum curator does.", True),
    ("How do birds know where to migrate?", True),
    ("The village had one road, and along it", False),
    ("My favourite place to read is", False),
    ("The ship sailed north for many weeks until", False),
    ("Science fairs are a great way for students to", False),
    ("The dog barked twice, then", False),
    ("Long ago, people told time by", False),
    ("The new park in the city centre has", False),
    ("She picked up the violin and", False),
    ("A map of the old town shows", False),
    ("The snow began to fall just as", False),
    ("In the kitchen, the kettle", False),
    ("The best part of a summer holiday is", False),
    ("Every spring, the birds return to", False),
    ("The scientist wrote in her notebook that", False),
    ("Our class planted a tree and", False),
    ("The shop on the corner sells", False),
    ("He opened the old wooden box and found", False),
    ("Walking through the forest at dawn,", False),
    ("The school choir practised every Thursday so that", False),
    ("At the end of the long day, the farmer", False),
)
"""(text, is_chat) pairs written apart from FIT_PROMPTS: 40 chat questions, 20 continuations."""


def chat_or_plain(tokenizer: Any, text: str, is_chat: bool) -> str:
    """The prompt as the model sees it: a chat turn through the tokenizer's template (when it has
    one and the prompt is a question), else the plain text."""
    if is_chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return text
