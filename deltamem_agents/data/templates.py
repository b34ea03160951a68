"""The sentences generated conversations are made of, apart from their values.

Kept apart from the value pools (data/values.py) so that the pools can leave out every held-out
value that would also occur in this text: a dev or test value never occurs anywhere in training,
not even as an ordinary word of a template ("Will", "Read" and "Good" are given names too).
`open_vocab` binds these slots to a split's values; `dialogue` tells the person facts.
"""

from __future__ import annotations

from dataclasses import dataclass

import deltamem_agents.data.vocab as vocab


@dataclass(frozen=True)
class OpenSlot:
    """A slot whose values are a pool of `values` (drawn per split)."""

    name: str
    kind: str
    value_kind: str  # a kind of data/values.py
    statements: tuple[str, ...]
    questions: tuple[str, ...]
    updates: tuple[str, ...] = ()


OPEN_FACTS: tuple[OpenSlot, ...] = (
    OpenSlot("ferret_name", "fact", "made_up_word",
             ("our ferret is called {v}", "I adopted a ferret and named it {v}", "my ferret {v} escaped again",
              "{v}, my ferret, stole a sock this morning"),
             ("What is the name of my ferret?", "What is my ferret called?")),
    OpenSlot("dog_name", "fact", "given_name",
             ("our dog {v} chewed my shoes again", "I had to take our dog {v} to the vet",
              "we named the new puppy {v}", "{v}, our dog, barked at the postman all day"),
             ("What is my dog's name?", "What is our dog called?")),
    OpenSlot("brother_name", "fact", "given_name",
             ("my brother {v} is visiting next month", "my brother {v} called me last night",
              "I had lunch with my brother, {v}", "{v}, my younger brother, just got engaged"),
             ("What is my brother's name?", "What is my brother called?")),
    OpenSlot("friend_surname", "fact", "surname",
             ("my best friend's surname is {v}", "my best friend signs her emails with her surname, {v}",
              "everyone calls my best friend by her surname, {v}"),
             ("What is my best friend's surname?", "Which surname does my best friend have?")),
    OpenSlot("moved_to", "fact", "city",
             ("I moved to {v} last spring", "I live in {v} now", "since I moved to {v} I cycle everywhere",
              "the flat I rent in {v} is tiny but bright"),
             ("Which city did I move to?", "Where do I live now?")),
    OpenSlot("hometown", "fact", "city",
             ("I grew up in {v}, so winters never scare me", "back in {v}, where I grew up, we did this every year",
              "my hometown is {v}", "I was born and raised in {v}"),
             ("Where did I grow up?", "Which city did I grow up in?")),
    OpenSlot("job", "fact", "occupation",
             ("I work as a {v}, so my shifts are odd", "being a {v} keeps me busy", "my job as a {v} pays the bills",
              "I started a new job as a {v}"),
             ("What is my job?", "What do I work as?")),
    OpenSlot("allergy", "fact", "food",
             ("I am allergic to {v}, which makes dinners tricky", "I have to avoid {v} because of an allergy",
              "my doctor says I am allergic to {v}"),
             ("What am I allergic to?", "Which food am I allergic to?")),
    OpenSlot("door_code", "fact", "code_word",
             ("the code for our building door is {v}", "if you ever visit, the door code is {v}",
              "they changed the front door code to {v}"),
             ("What is the code for our building door?", "What is the door code?")),
    OpenSlot("locker", "fact", "number",
             ("my gym locker is number {v}", "I always use locker {v} at the gym", "at the gym I got locker {v}"),
             ("What is my gym locker number?", "Which locker do I use at the gym?")),
    OpenSlot("birthday", "fact", "date",
             ("my birthday is on {v}", "I was born on {v}", "do not forget, my birthday is {v}"),
             ("When is my birthday?", "On which date is my birthday?")),
    OpenSlot("dentist_time", "fact", "time",
             ("my dentist appointment is at {v} on Friday", "I have to be at the dentist at {v} on Friday"),
             ("What time is my dentist appointment?", "At what time do I see the dentist on Friday?")),
)

OPEN_PREFERENCES: tuple[OpenSlot, ...] = (
    OpenSlot("food", "preference", "food",
             ("my favourite food is {v}, no contest", "nothing beats {v}, my favourite food",
              "if I could eat one thing forever it would be {v}", "I could eat {v} every day"),
             ("What is my favourite food?", "Which food do I like most?")),
    OpenSlot("holiday_city", "preference", "city",
             ("my favourite place for a holiday is {v}", "I would go back to {v} for every holiday",
              "no city beats {v} for a holiday"),
             ("Which city do I like best for holidays?", "Where is my favourite holiday place?")),
    OpenSlot("author", "preference", "surname",
             ("my favourite author is someone called {v}", "I read everything by the author {v}",
              "the books by {v} are my favourites"),
             ("Who is my favourite author?", "Which author do I like most?")),
)

OPEN_INSTRUCTIONS: tuple[OpenSlot | vocab.Slot, ...] = (
    OpenSlot("nickname", "instruction", "made_up_word",
             ("From now on, please call me {v}.", "Please call me {v} from now on.",
              "I would like you to call me {v} from now on.", "Call me {v}, please, from now on."),
             ("What should you call me?", "What name did I ask you to call me?")),
    *(slot for slot in vocab.INSTRUCTIONS if slot.name != "nickname"),
)

OPEN_TASKS: tuple[OpenSlot, ...] = (
    OpenSlot("launch_date", "task", "date",
             ("we are planning the product launch for {v}", "the product launch is set for {v}"),
             ("What date is the product launch now?", "When is the launch planned now?"),
             ("Change of plans: the launch moves to {v}.", "Update on the launch: it is now on {v}.")),
    OpenSlot("trip", "task", "city",
             ("we are planning a family trip to {v} in the spring", "our family trip will go to {v}"),
             ("Where is our trip going now?", "What is the destination of our trip now?"),
             ("We changed our minds: the trip goes to {v} instead.", "New plan for the trip: we are going to {v}.")),
    OpenSlot("meeting_room", "task", "made_up_word",
             ("the weekly team meeting is in the {v} room", "we meet every week in the {v} room"),
             ("Which room is the team meeting in now?", "Where is the weekly meeting held now?"),
             ("Heads up: the team meeting moved to the {v} room.", "The meeting is in the {v} room from now on.")),
    OpenSlot("budget", "task", "number",
             ("our budget for the party is {v} dollars", "we can spend {v} dollars on the party"),
             ("What is the party budget now?", "How many dollars is the party budget now?"),
             ("Update: the party budget is now {v} dollars.", "We changed the party budget to {v} dollars.")),
    OpenSlot("pickup_time", "task", "time",
             ("the airport pickup is at {v}", "the taxi picks us up for the airport at {v}"),
             ("What time is the airport pickup now?", "When does the taxi pick us up now?"),
             ("The airport pickup moved to {v}.", "New time for the airport pickup: {v}.")),
    OpenSlot("project_code", "task", "code_word",
             ("our project is filed under the code {v}", "the project code for our work is {v}"),
             ("What is the project code now?", "Which code is our project filed under now?"),
             ("The project got a new code: {v}.", "From now on the project code is {v}.")),
)


@dataclass(frozen=True)
class PersonSlot:
    """One thing a speaker tells about themselves; ``question`` names them with ``{name}``."""

    name: str
    value_kind: str  # a kind of data/values.py
    statements: tuple[str, ...]
    question: str


PERSON_FACTS: tuple[PersonSlot, ...] = (
    PersonSlot("job", "occupation", ("I started working as a {v} this month.", "Work as a {v} has been intense lately."),
               "What does {name} work as?"),
    PersonSlot("pet", "made_up_word", ("We adopted a kitten and called her {v}!", "My cat {v} knocked over a plant again."),
               "What is the name of {name}'s cat?"),
    PersonSlot("sibling", "given_name", ("My sister {v} came to stay for the weekend.", "I helped my sister {v} paint her flat."),
               "What is the name of {name}'s sister?"),
    PersonSlot("hometown", "city", ("I visited {v}, the town where I grew up.", "Growing up in {v} taught me to love the sea."),
               "Where did {name} grow up?"),
    PersonSlot("dish", "food", ("I finally learnt to cook {v}, my favourite dish.", "I had {v} again, I never get tired of it."),
               "What is {name}'s favourite dish?"),
    PersonSlot("teammate", "surname", ("My new teammate at the club is called {v}.", "Coach paired me with {v} for the match."),
               "What is the surname of {name}'s new teammate?"),
)

#: the event that changes: a move, told in one session and changed in a later one
MOVE_FIRST = ("Big news: I just moved to {v}!", "We packed everything and moved to {v} last week.")
MOVE_AGAIN = ("Guess what, we moved again, now we live in {v}.", "Another move: I am living in {v} now.")
REACTIONS = ("That is wonderful news!", "Wow, how exciting!", "I am so happy for you.", "Oh, tell me more about it!",
             "That sounds lovely.", "No way, that is great!")
GREETINGS = ("Hey {other}! It has been a while.", "Hi {other}, how have you been?", "Good to hear from you, {other}!")




def template_text() -> str:
    """Every statement, question, update and small-talk line generated conversations are built from."""
    slots = (*OPEN_FACTS, *OPEN_PREFERENCES, *OPEN_INSTRUCTIONS, *OPEN_TASKS)
    closed = (*vocab.FACTS, *vocab.PREFERENCES, *vocab.INSTRUCTIONS, *vocab.TASKS)
    return " ".join((
        *(t for slot in (*slots, *closed) for t in (*slot.statements, *slot.questions, *slot.updates)),
        *(t for slot in PERSON_FACTS for t in (*slot.statements, slot.question)),
        *MOVE_FIRST, *MOVE_AGAIN, *REACTIONS, *GREETINGS,
        *vocab.FILLER_USER, *vocab.FILLER_ASSISTANT, *vocab.ACKNOWLEDGEMENTS, *vocab.PASSING_OPENERS,
        *vocab.SESSION_OPENERS, *(text for request, replies in vocab.REQUESTS for text in (request, *replies.values())),
    ))
