"""What the synthetic conversations are made of: slots with values, statements and questions.

Each slot is one thing a user can tell in passing (a fact), state as a liking (a preference),
ask of the assistant (an instruction) or plan and then change (a task). Statements use ``{v}``
for the value (tasks: ``{v}`` in the plan and in its updates); questions are asked after the
history has left the attention window. Values are plain words so token F1 is meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

CITIES = (
    "Porto", "Lisbon", "Vienna", "Oslo", "Dublin", "Prague", "Kyoto", "Boston", "Denver", "Lyon",
    "Seville", "Krakow", "Helsinki", "Montreal", "Austin", "Nairobi", "Lima", "Perth", "Bergen", "Munich",
    "Naples", "Glasgow", "Quebec", "Hanoi", "Cusco", "Tallinn", "Ghent", "Zurich", "Malaga", "Tucson",
)
NAMES = (
    "Lena", "Marco", "Priya", "Tomas", "Aisha", "Jonas", "Greta", "Omar", "Nadia", "Felix", "Ingrid",
    "Mateo", "Yuki", "Hector", "Sofia", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Hana", "Ivan",
)
PET_NAMES = (
    "Biscuit", "Pepper", "Miso", "Rocket", "Noodle", "Ziggy", "Mango", "Pickles", "Waffles", "Luna",
    "Otis", "Juniper", "Tofu", "Bamboo", "Cosmo", "Marble", "Sprout", "Hazel",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)


@dataclass(frozen=True)
class Slot:
    """One kind of information; ``kind`` is the probe kind it is asked as."""

    name: str
    kind: str
    values: tuple[str, ...]
    statements: tuple[str, ...]
    questions: tuple[str, ...]
    updates: tuple[str, ...] = ()  # tasks only: how a plan changes


FACTS = (
    Slot("sister_city", "fact", CITIES,
         ("my sister just moved to {v} for her new job", "my sister finally settled in {v}"),
         ("Which city did my sister move to?", "Where does my sister live now?")),
    Slot("dog_name", "fact", PET_NAMES,
         ("our dog {v} chewed my shoes again", "I had to take our dog {v} to the vet"),
         ("What is my dog's name?", "What is our dog called?")),
    Slot("brother_name", "fact", NAMES,
         ("my brother {v} is visiting next month", "my brother {v} called me last night"),
         ("What is my brother's name?", "What is my brother called?")),
    Slot("hometown", "fact", CITIES,
         ("I grew up in {v}, so winters never scare me", "back in {v}, where I grew up, we did this every year"),
         ("Where did I grow up?", "Which city did I grow up in?")),
    Slot("birthday_month", "fact", MONTHS,
         ("my birthday is in {v}, so I am already planning", "since my birthday is in {v}, I get a day off then"),
         ("In which month is my birthday?", "When is my birthday month?")),
    Slot("allergy", "fact", ("peanuts", "shellfish", "pollen", "penicillin", "strawberries", "cats", "dust", "sesame", "eggs", "kiwi"),
         ("I am allergic to {v}, which makes things tricky", "I have to be careful because I am allergic to {v}"),
         ("What am I allergic to?", "Which allergy do I have?")),
    Slot("instrument", "fact", ("piano", "violin", "guitar", "cello", "drums", "flute", "trumpet", "harp", "banjo", "saxophone"),
         ("I have been learning the {v} in the evenings", "my {v} lessons are going well"),
         ("Which instrument am I learning?", "What instrument do I play?")),
    Slot("car", "fact", ("Volvo", "Toyota", "Subaru", "Honda", "Fiat", "Tesla", "Mazda", "Skoda", "Jeep", "Kia", "Peugeot", "Saab"),
         ("I finally bought a {v} last week", "my new {v} is parked outside"),
         ("What brand of car did I buy?", "Which car brand do I drive now?")),
    Slot("job", "fact", ("nurse", "pilot", "architect", "baker", "teacher", "chemist", "plumber", "librarian", "dentist", "carpenter", "journalist", "firefighter"),
         ("I work as a {v}, so my shifts are odd", "being a {v} keeps me busy"),
         ("What is my job?", "What do I work as?")),
)

PREFERENCES = (
    Slot("drink", "preference", ("green tea", "black coffee", "hot chocolate", "orange juice", "sparkling water", "mint tea", "espresso", "lemonade", "chai", "iced tea"),
         ("honestly {v} is my favourite drink", "I always pick {v}, it is my favourite drink"),
         ("What is my favourite drink?", "Which drink do I like best?")),
    Slot("food", "preference", ("sushi", "tacos", "pizza", "ramen", "curry", "paella", "dumplings", "falafel", "lasagna", "pho"),
         ("my favourite food is {v}, no contest", "nothing beats {v}, my favourite food"),
         ("What is my favourite food?", "Which food do I like most?")),
    Slot("colour", "preference", ("green", "blue", "orange", "purple", "yellow", "red", "teal", "pink", "grey", "maroon"),
         ("my favourite colour is {v}", "I paint everything {v}, my favourite colour"),
         ("What is my favourite colour?", "Which colour do I like best?")),
    Slot("music", "preference", ("jazz", "hip hop", "classical", "reggae", "techno", "country", "blues", "salsa", "folk", "punk"),
         ("I mostly listen to {v}, it is my favourite music", "{v} is the music I love most"),
         ("What music do I like most?", "Which kind of music is my favourite?")),
    Slot("sport", "preference", ("tennis", "football", "basketball", "cricket", "cycling", "rugby", "baseball", "golf", "hockey", "volleyball"),
         ("my favourite sport to watch is {v}", "I never miss a {v} match, it is my favourite sport"),
         ("Which sport do I like watching?", "What is my favourite sport?")),
    Slot("season", "preference", ("spring", "summer", "autumn", "winter"),
         ("{v} is my favourite season", "I like {v} more than any other season"),
         ("Which season do I like best?", "What is my favourite season?")),
)

NICKNAMES = ("Captain", "Boss", "Chief", "Doc", "Maestro", "Skipper", "Coach", "Professor", "Champ", "Ace", "Sunshine", "Major")
LANGUAGES = ("French", "Spanish", "German")
WORD_LIMITS = ("10", "12", "15", "20")

INSTRUCTIONS = (
    Slot("nickname", "instruction", NICKNAMES,
         ("From now on, please call me {v}.", "Please call me {v} from now on."),
         ("What should you call me?", "What name did I ask you to call me?")),
    Slot("language", "instruction", LANGUAGES,
         ("Please always answer me in {v} from now on.", "From now on, reply to me in {v}, please."),
         ("Which language should you answer me in?", "In which language did I ask you to reply?")),
    Slot("max_words", "instruction", WORD_LIMITS,
         ("Keep your answers under {v} words, please.", "Please keep every answer shorter than {v} words."),
         ("How many words may your answers have at most?", "What word limit did I give you for answers?")),
)

TASKS = (
    Slot("launch_day", "task", WEEKDAYS,
         ("we are planning the product launch for {v}",),
         ("What day is the product launch now?", "When is the launch planned now?"),
         ("Change of plans: the launch moves to {v}.", "Update on the launch: it is now on {v}.")),
    Slot("trip", "task", CITIES,
         ("we are planning a family trip to {v} in the spring",),
         ("Where is our trip going now?", "What is the destination of our trip now?"),
         ("We changed our minds: the trip goes to {v} instead.", "New plan for the trip: we are going to {v}.")),
    Slot("meeting_room", "task", ("Atlas", "Birch", "Cedar", "Delta", "Echo", "Falcon", "Harbor", "Maple"),
         ("the weekly team meeting is in the {v} room",),
         ("Which room is the team meeting in now?", "Where is the weekly meeting held now?"),
         ("Heads up: the team meeting moved to the {v} room.", "The meeting is in the {v} room from now on.")),
    Slot("budget", "task", ("200", "300", "400", "500", "600", "750", "800", "900", "1000", "1200"),
         ("our budget for the party is {v} dollars",),
         ("What is the party budget now?", "How many dollars is the party budget now?"),
         ("Update: the party budget is now {v} dollars.", "We changed the party budget to {v} dollars.")),
    Slot("deadline", "task", WEEKDAYS,
         ("the quarterly report is due on {v}",),
         ("On which day is the report due now?", "When is the quarterly report due now?"),
         ("The report deadline moved to {v}.", "New deadline for the report: {v}.")),
)

#: Requests whose replies are checked against the user's instructions; canned replies per language.
REQUESTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("Say good morning to me.", {
        "English": "Good morning, have a great day!", "French": "Bonjour, bonne journée !",
        "Spanish": "¡Buenos días, que tengas un buen día!", "German": "Guten Morgen, hab einen schönen Tag!"}),
    ("Wish me luck for my exam.", {
        "English": "Good luck with your exam!", "French": "Bonne chance pour ton examen !",
        "Spanish": "¡Buena suerte con tu examen!", "German": "Viel Glück bei deiner Prüfung!"}),
    ("Give me a tip for sleeping better.", {
        "English": "Go to bed at the same time every night.", "French": "Couche-toi à la même heure chaque soir.",
        "Spanish": "Acuéstate a la misma hora cada noche.", "German": "Geh jeden Abend zur gleichen Zeit ins Bett."}),
    ("How should I start my day?", {
        "English": "Start with a glass of water and a short walk.", "French": "Commence par un verre d'eau et une petite promenade.",
        "Spanish": "Empieza con un vaso de agua y un paseo corto.", "German": "Beginne mit einem Glas Wasser und einem kurzen Spaziergang."}),
    ("Suggest a good snack.", {
        "English": "An apple with some nuts is a good snack.", "French": "Une pomme avec des noix est un bon goûter.",
        "Spanish": "Una manzana con nueces es un buen tentempié.", "German": "Ein Apfel mit Nüssen ist ein guter Snack."}),
    ("Encourage me to go for a run.", {
        "English": "You can do it, a short run will feel great!", "French": "Tu peux le faire, une petite course te fera du bien !",
        "Spanish": "¡Tú puedes, una carrera corta te sentará genial!", "German": "Du schaffst das, ein kurzer Lauf tut dir gut!"}),
    ("Say goodbye to me.", {
        "English": "Goodbye, see you soon!", "French": "Au revoir, à bientôt !",
        "Spanish": "¡Adiós, hasta pronto!", "German": "Auf Wiedersehen, bis bald!"}),
    ("Tell me something nice about the weekend.", {
        "English": "The weekend is a great time to rest.", "French": "Le week-end est un bon moment pour se reposer.",
        "Spanish": "El fin de semana es un buen momento para descansar.", "German": "Das Wochenende ist eine gute Zeit zum Ausruhen."}),
)

FILLER_USER = (
    "The weather has been so grey this week.", "I watched a documentary about octopuses yesterday.",
    "Work was hectic today, lots of emails.", "I am trying to drink more water lately.",
    "Do you have any ideas for a quick dinner?", "I finally cleaned out the garage.",
    "My neighbour started building a treehouse.", "I read half a novel on the train this morning.",
    "The coffee machine at the office broke again.", "I want to start stretching every morning.",
    "We had a long meeting about nothing in particular.", "I am thinking about repainting the kitchen.",
    "The bus was twenty minutes late today.", "I tried a new recipe with lentils.",
    "My phone battery dies so quickly these days.", "I went for a walk along the river.",
    "Our internet was down for most of the afternoon.", "I should really organise my photos.",
    "The supermarket was packed this evening.", "I found an old board game in the attic.",
    "I am a bit tired, I slept badly.", "Can you recommend a podcast for the commute?",
    "I planted some herbs on the balcony.", "The neighbours had a loud party last night.",
    "I need to renew my passport soon.", "I spent the morning fixing a squeaky door.",
)
FILLER_ASSISTANT = (
    "That sounds like quite a day!", "Thanks for telling me.", "I hope things calm down soon.",
    "That is a nice idea.", "Good luck with that!", "Sounds relaxing.", "That must have been annoying.",
    "Interesting! Tell me more whenever you like.", "A simple stir-fry is always quick.",
    "That is a good habit.", "Oh no, I hope it gets fixed soon.", "Nice, enjoy it!",
)
ACKNOWLEDGEMENTS = (
    "Got it, thanks for sharing.", "Noted!", "Good to know.", "Thanks, I will keep that in mind.",
    "Understood.", "That is good to know, thank you.", "Okay, noted.",
)
PASSING_OPENERS = ("By the way, ", "Oh, and ", "Funny thing: ", "Also, ", "Side note: ")
SESSION_OPENERS = ("Hi again!", "Hello, it is me again.", "Good evening!", "Hey, back for a chat.", "Morning!")
