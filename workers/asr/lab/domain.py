"""The demo domain: call-center, retail/drive-thru ordering and IT-support turns, generated from templates.

The generator is deterministic for a seed, so the corpus, the lexicon and the LM can be rebuilt from
commands alone. Held-out sentences (for eval and the shipped samples) are chosen by a hash of their
text and excluded from training and from the LM, so evaluation measures unseen sentences.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINALS = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
    "twentieth",
]


def number_words(n: int) -> str:
    """Spell 0..9999 the way people say it on the phone."""
    if n < 10:
        return _ONES[n]
    if n < 20:
        return _TEENS[n - 10]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    rest = n % 1000
    return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))


def _w(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


FIRST_NAMES = _w(
    "james, mary, john, patricia, robert, jennifer, michael, linda, david, elizabeth, william, barbara, richard, "
    "susan, joseph, jessica, thomas, sarah, charles, karen, daniel, lisa, matthew, nancy, anthony, betty, mark, "
    "sandra, donald, margaret, steven, ashley, paul, kimberly, andrew, emily, joshua, donna, kevin, michelle, "
    "brian, carol, george, amanda, timothy, melissa, ronald, deborah, jason, stephanie, edward, rebecca, jeffrey, "
    "sharon, ryan, laura, jacob, cynthia, gary, amy, nicholas, kathleen, eric, angela, jonathan, helen, stephen, "
    "anna, larry, brenda, justin, pamela, scott, emma, brandon, nicole, benjamin, samantha, samuel, katherine, "
    "gregory, christine, alexander, debra, patrick, rachel, frank, carolyn, raymond, janet, jack, maria, dennis, "
    "olivia, jerry, heather, tyler, diane, aaron, julie, jose, joyce, adam, victoria, nathan, kelly, henry, "
    "christina, peter, lauren, zachary, joan, douglas, evelyn, kyle, judith, noah, megan, ethan, andrea, "
    "jeremy, cheryl, walter, hannah, christian, jacqueline, keith, martha, roger, gloria, terry, teresa, austin, "
    "ann, sean, sara, gerald, madison, carl, frances, harold, kathryn, dylan, janice, arthur, jean, lawrence, "
    "abigail, jordan, alice, jesse, judy, bryan, sophia, billy, grace, bruce, denise, gabriel, amber, joe, "
    "doris, logan, marilyn, alan, danielle, juan, beverly, albert, isabella, willie, theresa, elijah, diana, "
    "wayne, natalie, randy, brittany, vincent, charlotte, mason, marie, roy, kayla, ralph, alexis, bobby, lori, "
    "russell, priya, raj, carlos, luis, miguel, sofia, wei, chen, mohammed, fatima, omar, aisha, kenji, yuki"
)
LAST_NAMES = _w(
    "smith, johnson, williams, brown, jones, garcia, miller, davis, rodriguez, martinez, hernandez, lopez, "
    "gonzalez, wilson, anderson, thomas, taylor, moore, jackson, martin, lee, perez, thompson, white, harris, "
    "sanchez, clark, ramirez, lewis, robinson, walker, young, allen, king, wright, scott, torres, nguyen, hill, "
    "flores, green, adams, nelson, baker, hall, rivera, campbell, mitchell, carter, roberts, gomez, phillips, "
    "evans, turner, diaz, parker, cruz, edwards, collins, reyes, stewart, morris, morales, murphy, cook, rogers, "
    "gutierrez, ortiz, morgan, cooper, peterson, bailey, reed, kelly, howard, ramos, kim, cox, ward, richardson, "
    "watson, brooks, chavez, wood, james, bennett, gray, mendoza, ruiz, hughes, price, alvarez, castillo, "
    "sanders, patel, myers, long, ross, foster, jimenez, powell, jenkins, perry, russell, sullivan, bell, "
    "coleman, butler, henderson, barnes, fisher, vasquez, simmons, romero, jordan, patterson, alexander, "
    "hamilton, graham, reynolds, griffin, wallace, west, cole, hayes, bryant, herrera, gibson, ellis, tran"
)
CITIES = _w(
    "new york, los angeles, chicago, houston, phoenix, philadelphia, san antonio, san diego, dallas, austin, "
    "jacksonville, columbus, charlotte, indianapolis, seattle, denver, boston, nashville, detroit, portland, "
    "memphis, louisville, baltimore, milwaukee, albuquerque, tucson, fresno, sacramento, atlanta, miami, "
    "omaha, raleigh, oakland, minneapolis, tulsa, cleveland, tampa, orlando, pittsburgh, cincinnati, "
    "saint louis, kansas city, salt lake city, las vegas, richmond, buffalo, madison, boise, spokane, "
    "des moines, toronto, vancouver, montreal, london, dublin, chicago heights, springfield, riverside"
)
STREETS = _w(
    "main, oak, maple, pine, cedar, elm, washington, lake, hill, park, sunset, lincoln, jefferson, church, "
    "river, spring, highland, forest, meadow, willow, cherry, walnut, chestnut, franklin, madison, center, "
    "broadway, market, union, mill, valley, ridge, harbor, bridge, college, school, north, south, east, west"
)
STREET_TYPES = _w("street, avenue, road, drive, lane, boulevard, court, place, way, circle, parkway")
STATES = _w(
    "california, texas, florida, ohio, georgia, michigan, virginia, washington, arizona, colorado, oregon, "
    "nevada, utah, iowa, kansas, kentucky, alabama, indiana, illinois, tennessee, missouri, minnesota, "
    "wisconsin, maryland, new jersey, north carolina, south carolina, pennsylvania, massachusetts, louisiana"
)
MONTHS = _w("january, february, march, april, may, june, july, august, september, october, november, december")
DAYS = _w("monday, tuesday, wednesday, thursday, friday, saturday, sunday, today, tomorrow, yesterday")
COLORS = _w("black, white, red, blue, green, gray, silver, gold, pink, purple, navy, beige, brown, yellow, orange")
SIZES = _w("small, medium, large, extra large, kids, regular, double, family size, mini, jumbo")
LETTERS = _w("a, b, c, d, e, f, g, h, j, k, m, n, p, q, r, s, t, u, v, w, x, y, z")

BURGERS = _w(
    "cheeseburger, hamburger, double cheeseburger, bacon cheeseburger, chicken sandwich, spicy chicken sandwich, "
    "fish sandwich, veggie burger, turkey club, grilled chicken wrap, crispy chicken wrap, breakfast burrito, "
    "sausage biscuit, egg muffin, bacon egg and cheese bagel, hash brown, pancakes, french toast sticks, "
    "chicken nuggets, chicken tenders, hot dog, chili dog, taco, bean burrito, quesadilla, nachos, "
    "cheese pizza, pepperoni pizza, meat lovers pizza, garden salad, caesar salad, cobb salad, chicken soup, "
    "tomato soup, grilled cheese, club sandwich, steak sandwich, meatball sub, italian sub, tuna melt, "
    "blt, pulled pork sandwich, rib sandwich, chicken bowl, rice bowl, burrito bowl, teriyaki bowl"
)
SIDES = _w(
    "fries, curly fries, onion rings, mozzarella sticks, side salad, apple slices, coleslaw, mashed potatoes, "
    "baked potato, sweet potato fries, tater tots, garlic bread, breadsticks, chips, mac and cheese, corn, "
    "chili, fruit cup, yogurt, cookie, brownie, apple pie, cinnamon roll, donut, muffin, croissant"
)
DRINKS = _w(
    "coke, diet coke, sprite, root beer, lemonade, iced tea, sweet tea, unsweet tea, orange juice, apple juice, "
    "milk, chocolate milk, water, bottled water, coffee, iced coffee, decaf, latte, cappuccino, mocha, "
    "hot chocolate, vanilla shake, chocolate shake, strawberry shake, smoothie, dr pepper, ginger ale, "
    "fanta, mountain dew, green tea, espresso, cold brew, frappe"
)
MODIFIERS = _w(
    "no onions, no pickles, extra cheese, no cheese, no ice, light ice, extra sauce, no mayo, extra pickles, "
    "no tomato, add bacon, with ketchup, with mustard, on the side, well done, extra crispy, gluten free, "
    "with ranch, with barbecue sauce, with honey mustard, no salt, extra salt, with a lid, with a straw, "
    "with cream and sugar, with oat milk, with almond milk, extra shot, half sweet, no whipped cream"
)
SAUCES = _w("ketchup, ranch, barbecue sauce, honey mustard, buffalo sauce, sweet and sour, hot sauce, mayo, salsa")

PRODUCTS = _w(
    "laptop, tablet, phone, smart watch, headphones, earbuds, charger, phone case, screen protector, keyboard, "
    "mouse, monitor, printer, router, modem, speaker, camera, television, tv, gaming console, controller, "
    "hard drive, memory card, usb cable, power bank, microwave, blender, coffee maker, vacuum, air fryer, "
    "toaster, refrigerator, dishwasher, washing machine, dryer, space heater, fan, lamp, mattress, pillow, "
    "blanket, sofa, desk, office chair, bookshelf, backpack, jacket, shoes, sneakers, boots, jeans, shirt, "
    "dress, sweater, hoodie, socks, gift card, subscription, membership, warranty, package, order, shipment, "
    "replacement part, battery, light bulb, thermostat, doorbell, security camera, smoke detector"
)
BRANDS_ISH = _w("pro, plus, max, mini, ultra, lite, basic, premium, deluxe, standard, classic, home, business")
ACCOUNT_THINGS = _w(
    "bill, invoice, statement, payment, refund, credit, charge, balance, account, plan, contract, "
    "subscription, membership, order, delivery, shipment, return, exchange, warranty claim, rebate, "
    "late fee, service fee, deposit, autopay, direct debit, credit card, debit card, bank account, receipt"
)
PROBLEMS_BILLING = _w(
    "i was charged twice, my bill is higher than usual, i never received my refund, there is a charge i do not "
    "recognize, my payment did not go through, i was charged a late fee, my discount was not applied, "
    "my autopay failed, my card was declined, i want to dispute a charge, i need a copy of my invoice, "
    "the price on my statement is wrong, i was billed for something i cancelled, my promo code did not work"
)
PROBLEMS_ORDER = _w(
    "my order has not arrived, the package was damaged, i received the wrong item, an item is missing, "
    "the tracking number does not work, my delivery is late, the box was empty, the size is wrong, "
    "it stopped working after a week, the screen is cracked, it will not turn on, the color is different, "
    "i ordered two but only got one, the delivery driver left it at the wrong address"
)
IT_THINGS = _w(
    "computer, laptop, email, password, account, vpn, wifi, network, printer, server, database, website, "
    "application, app, browser, software, update, license, drive, folder, file, spreadsheet, calendar, "
    "phone, headset, webcam, microphone, monitor, docking station, keyboard, badge, login, portal, "
    "shared drive, team site, chat app, video call, inbox, firewall, antivirus, operating system, "
    "backup, system, dashboard, report, ticket, certificate, token, profile, mailbox, domain, cloud storage"
)
IT_PROBLEMS = _w(
    "is not working, keeps crashing, is very slow, will not connect, keeps freezing, shows an error, "
    "will not load, keeps logging me out, is locked, has expired, is not syncing, will not open, "
    "is frozen, stopped responding, is down, is not printing, has no sound, is blank, keeps restarting, "
    "says access denied, says my session timed out, will not update, is out of space, keeps disconnecting"
)
IT_ACTIONS = _w(
    "restart your computer, clear your browser cache, sign out and sign back in, reset your password, "
    "update the driver, unplug the router and plug it back in, check the cable, run the update, "
    "reinstall the app, turn off the vpn, turn it off and on again, open the settings menu, "
    "click on the start button, type your username, enter the code we sent you, check your spam folder, "
    "connect to the guest network, hold down the power button, close all the windows, "
    "open a new browser tab, go to the help portal, scan the qr code, approve the sign in request"
)
ERROR_WORDS = _w("error, code, message, warning, alert, number")
PLANS = _w("basic, standard, premium, family, unlimited, business, student, annual, monthly, starter")
DEPARTMENTS = _w(
    "billing, sales, technical support, customer service, shipping, returns, accounts, the help desk, "
    "human resources, security, the network team, the service desk, my manager, a supervisor, a specialist"
)
TIMES = [f"{h} {m}" for h in _ONES[1:] + _TEENS[:3] for m in ("o clock", "thirty", "fifteen", "forty five")]
GREETINGS = _w(
    "hi, hello, hey, good morning, good afternoon, good evening, hi there, hello there, yes hi, um hi, "
    "okay, alright, so, yeah, well, um, uh, oh, sure, yes, no, okay so, right"
)
POLITE_END = _w(
    "please, thank you, thanks, thank you so much, if you can, if possible, when you get a chance, "
    "as soon as possible, right now, today, for me, please and thank you, that would be great"
)


def _merge(*lists: list[str]) -> list[str]:
    return list(dict.fromkeys(x for lst in lists for x in lst))


# The second half of the vocabulary: banking, insurance, travel, utilities and retail/IT breadth.
FIRST_NAMES_MORE = _w(
    "abdul, akira, alan, alberto, alejandro, alfredo, ali, alina, allison, alyssa, amir, ana, andre, "
    "angelo, anita, antonio, april, ariana, armando, arturo, audrey, ava, barry, beatrice, bella, bernard, "
    "beth, bianca, blake, bonnie, brad, brenda, brent, brett, bridget, brooke, bruno, caleb, calvin, cameron, "
    "camila, carla, carmen, caroline, casey, cecilia, chad, chandra, chloe, chris, claire, clara, clarence, "
    "claudia, clayton, colin, connor, courtney, craig, crystal, curtis, dale, dana, darius, darnell, darren, "
    "dawn, dean, deepak, delia, derek, desmond, devin, diego, dominic, donna, dora, dwayne, eddie, eduardo, "
    "elaine, elena, eli, elliot, ellen, emilio, enrique, erin, esther, eugene, eva, evan, faith, farah, felix, "
    "fernando, fiona, francisco, gabriela, gavin, gina, glen, gordon, grant, greg, hailey, hamza, harry, "
    "hassan, hector, holly, hugo, ian, ibrahim, irene, isaac, ivan, jade, jamal, jasmine, javier, jay, "
    "jenna, jill, jim, joanna, joel, jorge, julia, julian, kai, karim, kate, katie, keisha, ken, kim, kristen, "
    "lamar, leah, leo, leon, leslie, liam, lily, lorenzo, lucas, lucy, luke, malik, manuel, marco, marcus, "
    "mario, marisol, marta, max, maya, mei, melanie, mia, micah, miles, molly, monica, morgan, nadia, naomi, "
    "neil, nina, nora, oliver, oscar, owen, pablo, pedro, penny, phil, quinn, rafael, ramon, rashid, reggie, "
    "renee, ricardo, rita, rob, roberto, rosa, ruby, ruth, sabrina, sally, salma, sam, sanjay, sergio, "
    "shane, sheila, simon, sonia, stella, tanya, tara, ted, tina, todd, tom, tony, travis, trevor, troy, "
    "valerie, vanessa, vera, victor, vivian, wade, wendy, xavier, yasmin, yolanda, yusuf, zach, zara, zoe"
)
LAST_NAMES_MORE = _w(
    "abbott, acosta, aguilar, ali, andrews, armstrong, arnold, austin, ayala, banks, barker, barrett, "
    "bates, beck, benson, berry, bishop, black, blake, boyd, bradley, brady, burke, burns, bush, byrd, "
    "caldwell, cannon, carlson, carpenter, carr, carroll, castro, chambers, chan, chang, chapman, cohen, "
    "contreras, craig, crawford, cunningham, curtis, daniels, davidson, dawson, day, dean, delgado, dixon, "
    "douglas, duncan, dunn, elliott, estrada, farmer, ferguson, fernandez, fields, fleming, fletcher, ford, "
    "fowler, fox, francis, frank, franklin, freeman, fuller, garza, george, gilbert, glover, goodman, "
    "gordon, grant, greene, guerrero, gupta, hale, hansen, hanson, hardy, harper, harvey, hawkins, hicks, "
    "hoffman, holland, holmes, hopkins, horton, houston, hudson, hunt, hunter, ingram, jacobs, jensen, "
    "johnston, kaur, keller, kennedy, khan, knight, lambert, lane, larson, lawrence, lawson, le, leonard, "
    "little, lowe, lucas, lynch, mann, marshall, mason, matthews, mccarthy, mcdonald, medina, meyer, mills, "
    "montgomery, moreno, mullins, munoz, newman, nichols, obrien, oliver, olson, owens, palmer, park, "
    "payne, pearson, pena, pierce, porter, quinn, rice, riley, rios, robertson, rose, ryan, salazar, "
    "sandoval, schmidt, schneider, sharma, shaw, silva, simpson, singh, snyder, soto, spencer, stanley, "
    "stone, summers, sutton, tucker, vargas, vaughn, wagner, walsh, warren, watkins, weaver, webb, wells, "
    "wheeler, williamson, willis, wolf, wong, woods, yang, zhang"
)
CITIES_MORE = _w(
    "anchorage, honolulu, el paso, fort worth, arlington, aurora, bakersfield, baton rouge, birmingham, "
    "boulder, burlington, charleston, chattanooga, colorado springs, corpus christi, dayton, durham, "
    "fort lauderdale, grand rapids, green bay, greensboro, hartford, irvine, jersey city, knoxville, "
    "lexington, lincoln, little rock, long beach, lubbock, mesa, mobile, newark, norfolk, oklahoma city, "
    "palm springs, pasadena, plano, providence, reno, rochester, san francisco, san jose, santa fe, "
    "savannah, scottsdale, syracuse, tacoma, tallahassee, toledo, wichita, worcester, calgary, ottawa, "
    "edmonton, winnipeg, halifax, quebec city, mexico city, manchester, glasgow, edinburgh, sydney, "
    "melbourne, auckland, singapore, mumbai, delhi, bangalore, manila, tokyo, seoul, berlin, paris, madrid"
)
STREETS_MORE = _w(
    "adams, ash, aspen, bay, beach, birch, briar, brook, canyon, cypress, dogwood, eagle, fairview, falcon, "
    "garden, glen, grove, hickory, holly, hudson, jackson, juniper, kings, laurel, locust, magnolia, mountain, "
    "ocean, orchard, poplar, prospect, quail, redwood, rose, sage, shore, spruce, summit, sycamore, vine"
)
BURGERS_MORE = _w(
    "brisket sandwich, smoked turkey sandwich, jalapeno burger, mushroom swiss burger, patty melt, "
    "chicken parmesan sandwich, philly cheesesteak, reuben sandwich, shrimp basket, fish and chips, "
    "chicken fajitas, beef enchiladas, chicken quesadilla, carnitas taco, fish taco, street tacos, "
    "breakfast sandwich, sausage egg and cheese croissant, waffle, blueberry pancakes, oatmeal, "
    "avocado toast, egg white wrap, chicken caesar wrap, buffalo chicken wrap, spicy tuna roll, "
    "california roll, orange chicken, fried rice, lo mein, pad thai, chicken curry, falafel wrap, gyro, "
    "hummus plate, greek salad, spinach salad, chef salad, chicken noodle soup, clam chowder, "
    "minestrone, loaded baked potato, chili cheese fries, buffalo wings, boneless wings, popcorn chicken, "
    "corn dog, pretzel bites, cheese sticks, margherita pizza, hawaiian pizza, veggie pizza, supreme pizza, "
    "calzone, lasagna, spaghetti and meatballs, fettuccine alfredo, ravioli, chicken strips, fish fillet"
)
SIDES_MORE = _w(
    "hush puppies, fried okra, collard greens, baked beans, potato salad, pasta salad, black beans, "
    "refried beans, spanish rice, white rice, steamed vegetables, side of guacamole, sour cream, "
    "queso, pico de gallo, pickles, jalapenos, banana, granola bar, cheesecake, ice cream sundae, "
    "chocolate chip cookie, oatmeal raisin cookie, lemon bar, churros, cinnamon twists, pie slice"
)
DRINKS_MORE = _w(
    "arnold palmer, hibiscus tea, chai latte, matcha latte, flat white, americano, macchiato, "
    "caramel macchiato, pumpkin spice latte, peach iced tea, raspberry lemonade, sparkling water, "
    "club soda, tonic water, cranberry juice, grape soda, cream soda, horchata, energy drink, "
    "protein shake, mango smoothie, banana smoothie, oreo shake, peanut butter shake, slushie"
)
PRODUCTS_MORE = _w(
    "wireless mouse, gaming headset, webcam, ring light, tripod, projector, streaming stick, soundbar, "
    "subwoofer, turntable, record player, e reader, fitness tracker, drone, action camera, flash drive, "
    "ethernet cable, hdmi cable, surge protector, extension cord, mesh router, range extender, "
    "graphics card, motherboard, processor, solid state drive, ink cartridge, toner, paper shredder, "
    "label maker, calculator, electric toothbrush, hair dryer, straightener, electric razor, "
    "stand mixer, food processor, rice cooker, slow cooker, pressure cooker, espresso machine, kettle, "
    "water filter, humidifier, dehumidifier, air purifier, ceiling fan, floor lamp, rug, curtains, "
    "bed frame, nightstand, dresser, recliner, patio set, grill, lawn mower, leaf blower, pressure washer, "
    "drill, tool set, ladder, garden hose, car seat, stroller, crib, high chair, baby monitor, "
    "yoga mat, dumbbells, treadmill, exercise bike, bicycle, helmet, scooter, skateboard, tent, "
    "sleeping bag, cooler, suitcase, carry on bag, duffel bag, wallet, watch band, sunglasses, umbrella, "
    "rain jacket, winter coat, gloves, scarf, hat, sandals, slippers, leggings, shorts, polo shirt, "
    "blazer, tie, belt, purse, necklace, earrings, bracelet, ring"
)
ACCOUNT_THINGS_MORE = _w(
    "checking account, savings account, mortgage payment, car loan, loan application, wire transfer, "
    "overdraft fee, atm withdrawal, mobile deposit, pin number, routing number, insurance policy, "
    "insurance claim, deductible, premium, copay, prescription, pharmacy order, flight reservation, "
    "hotel booking, rental car, boarding pass, seat assignment, baggage claim, travel voucher, "
    "gas bill, electric bill, water bill, internet service, cable package, phone plan, data plan, "
    "gym membership, streaming service, magazine subscription, meal kit, loyalty points, reward points"
)
PROBLEMS_MORE = _w(
    "my flight was cancelled, my bag did not arrive, i missed my connecting flight, my seat was changed, "
    "the hotel lost my reservation, my rental car was not ready, my claim was denied, "
    "my prescription is not ready, the pharmacy says my insurance expired, my power has been out since "
    "last night, my internet keeps dropping, the water pressure is very low, my meter reading is wrong, "
    "someone used my card without permission, i think my account was hacked, i lost my wallet, "
    "my check has not cleared, the atm kept my card, my loan payment was applied twice, "
    "i was locked out of online banking, my points are missing, my coupon expired yesterday"
)
IT_THINGS_MORE = _w(
    "outlook, excel, powerpoint, word document, teams, zoom, slack, sharepoint, onedrive, google drive, "
    "salesforce, jira, confluence, github, password manager, authenticator app, two factor code, "
    "remote desktop, citrix, virtual machine, hard disk, usb port, bluetooth, touchpad, trackpad, "
    "graphics driver, sound card, network adapter, ip address, dns server, proxy, wireless access point, "
    "switch, cable modem, fiber line, laptop charger, docking cable, second monitor, projector screen, "
    "conference phone, voicemail, desk phone, mobile device, tablet app, company portal, intranet, "
    "payroll system, expense report, time sheet, crm, erp system, inventory system, point of sale, "
    "cash register, receipt printer, barcode scanner, card reader, kiosk"
)
IT_PROBLEMS_MORE = _w(
    "is running out of memory, shows a blue screen, makes a clicking noise, is overheating, "
    "keeps asking for my password, cannot find the printer, is stuck on the loading screen, "
    "says the certificate is invalid, says my license is not valid, lost all my files, "
    "will not let me save, is showing the wrong time, keeps dropping calls, has a flickering screen, "
    "is not charging, will not recognize the device, says the server is unreachable"
)
IT_ACTIONS_MORE = _w(
    "run the troubleshooter, check for updates, disable the extension, remove the device and add it again, "
    "forget the network and reconnect, restart in safe mode, clear the print queue, "
    "update your browser, sign in with your company email, accept the terms and conditions, "
    "restart the docking station, swap the cable, try a different usb port, check the power light"
)
DEPARTMENTS_MORE = _w(
    "fraud prevention, the claims department, the pharmacy, reservations, the front desk, "
    "the loan department, collections, the billing office, the warehouse, the store manager"
)

FIRST_NAMES = _merge(FIRST_NAMES, FIRST_NAMES_MORE)
LAST_NAMES = _merge(LAST_NAMES, LAST_NAMES_MORE)
CITIES = _merge(CITIES, CITIES_MORE)
STREETS = _merge(STREETS, STREETS_MORE)
BURGERS = _merge(BURGERS, BURGERS_MORE)
SIDES = _merge(SIDES, SIDES_MORE)
DRINKS = _merge(DRINKS, DRINKS_MORE)
PRODUCTS = _merge(PRODUCTS, PRODUCTS_MORE)
ACCOUNT_THINGS = _merge(ACCOUNT_THINGS, ACCOUNT_THINGS_MORE)
IT_THINGS = _merge(IT_THINGS, IT_THINGS_MORE)
IT_PROBLEMS = _merge(IT_PROBLEMS, IT_PROBLEMS_MORE)
IT_ACTIONS = _merge(IT_ACTIONS, IT_ACTIONS_MORE)
DEPARTMENTS = _merge(DEPARTMENTS, DEPARTMENTS_MORE)


def _num(rng: random.Random, lo: int, hi: int) -> str:
    return number_words(rng.randint(lo, hi))


def _digits(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_ONES if rng.random() < 0.9 else ["oh"]) for _ in range(n))


def _price(rng: random.Random) -> str:
    dollars = rng.randint(1, 300)
    cents = rng.choice([0, 25, 49, 50, 75, 95, 99, rng.randint(1, 99)])
    if cents == 0:
        return f"{number_words(dollars)} dollars"
    if rng.random() < 0.5:
        return f"{number_words(dollars)} dollars and {number_words(cents)} cents"
    return f"{number_words(dollars)} {number_words(cents)}"


def _date(rng: random.Random) -> str:
    return f"{rng.choice(MONTHS)} {rng.choice([*_ORDINALS, 'twenty first', 'twenty second', 'thirtieth'])}"


def _food(rng: random.Random) -> str:
    kind = rng.random()
    count = rng.choice(["a", "one", "two", "three", "four", "a", "a"])
    if kind < 0.45:
        item = rng.choice(BURGERS)
    elif kind < 0.7:
        item = f"{rng.choice(SIZES)} {rng.choice(SIDES)}" if rng.random() < 0.6 else rng.choice(SIDES)
    else:
        item = f"{rng.choice(SIZES)} {rng.choice(DRINKS)}" if rng.random() < 0.7 else rng.choice(DRINKS)
    mod = f" {rng.choice(MODIFIERS)}" if rng.random() < 0.25 else ""
    return f"{count} {item}{mod}"


def _product(rng: random.Random) -> str:
    p = rng.choice(PRODUCTS)
    r = rng.random()
    if r < 0.2:
        return f"{rng.choice(COLORS)} {p}"
    if r < 0.35:
        return f"{p} {rng.choice(BRANDS_ISH)}"
    return p


def _name(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    return rng.choice(FIRST_NAMES)


def _address(rng: random.Random) -> str:
    return f"{_num(rng, 1, 9999)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}"


Slot = Callable[[random.Random], str]
SLOTS: dict[str, Slot] = {
    "name": _name,
    "first": lambda r: r.choice(FIRST_NAMES),
    "last": lambda r: r.choice(LAST_NAMES),
    "city": lambda r: r.choice(CITIES),
    "state": lambda r: r.choice(STATES),
    "address": _address,
    "food": _food,
    "drink": lambda r: f"{r.choice(SIZES)} {r.choice(DRINKS)}",
    "side": lambda r: r.choice(SIDES),
    "item": lambda r: r.choice(BURGERS),
    "mod": lambda r: r.choice(MODIFIERS),
    "sauce": lambda r: r.choice(SAUCES),
    "product": _product,
    "thing": lambda r: r.choice(ACCOUNT_THINGS),
    "billing_problem": lambda r: r.choice(PROBLEMS_BILLING),
    "order_problem": lambda r: r.choice(PROBLEMS_ORDER),
    "service_problem": lambda r: r.choice(PROBLEMS_MORE),
    "year": lambda r: (
        f"nineteen {number_words(r.randint(40, 99))}" if r.random() < 0.7 else f"two thousand {_num(r, 1, 9)}"
    ),
    "it": lambda r: r.choice(IT_THINGS),
    "it_problem": lambda r: r.choice(IT_PROBLEMS),
    "it_action": lambda r: r.choice(IT_ACTIONS),
    "error": lambda r: r.choice(ERROR_WORDS),
    "plan": lambda r: r.choice(PLANS),
    "dept": lambda r: r.choice(DEPARTMENTS),
    "time": lambda r: r.choice(TIMES),
    "day": lambda r: r.choice(DAYS),
    "month": lambda r: r.choice(MONTHS),
    "date": _date,
    "price": _price,
    "count": lambda r: _num(r, 2, 12),
    "minutes": lambda r: r.choice(["five", "ten", "fifteen", "twenty", "thirty", "forty five"]),
    "days": lambda r: r.choice(["two", "three", "five", "seven", "ten", "fourteen", "thirty"]),
    "digits4": lambda r: _digits(r, 4),
    "phone": lambda r: _digits(r, 10),
    "order_no": lambda r: _digits(r, r.choice([6, 7, 8])),
    "zip": lambda r: _digits(r, 5),
    "letter": lambda r: r.choice(LETTERS),
    "percent": lambda r: f"{r.choice(['ten', 'fifteen', 'twenty', 'twenty five', 'thirty', 'fifty'])} percent",
    "color": lambda r: r.choice(COLORS),
    "ordinal": lambda r: r.choice(_ORDINALS[:10]),
    "greet": lambda r: r.choice(GREETINGS),
    "polite": lambda r: r.choice(POLITE_END),
}

CALL_CENTER = [
    "thank you for calling customer service my name is {first} how can i help you today",
    "thanks for calling this is {first} may i have your account number please",
    "{greet} i am calling about my {thing}",
    "{greet} i have a question about my {thing}",
    "{billing_problem}",
    "{greet} {billing_problem}",
    "{billing_problem} can you help me with that",
    "{order_problem}",
    "{greet} {order_problem} and i need a replacement",
    "my account number is {order_no}",
    "my order number is {order_no}",
    "the last four digits of the card are {digits4}",
    "my phone number is {phone}",
    "my zip code is {zip}",
    "it is {name}",
    "my name is {name}",
    "the account is under {name}",
    "i live at {address} in {city}",
    "the address is {address} {city} {state}",
    "can you verify the email address on the account",
    "can you spell your last name for me",
    "sure it is {letter} {letter} {letter} {letter}",
    "i see a charge of {price} on {date}",
    "your current balance is {price}",
    "the total comes to {price}",
    "i can offer you a credit of {price} on your next bill",
    "i can give you {percent} off for the next {days} months",
    "your refund of {price} will show up in {days} business days",
    "you should see it within {days} to {days} business days",
    "i would like to cancel my {plan} plan",
    "i want to upgrade to the {plan} plan",
    "i want to switch to the {plan} plan",
    "how much is the {plan} plan per month",
    "the {plan} plan is {price} a month",
    "let me transfer you to {dept}",
    "can i speak to {dept}",
    "can i talk to a real person",
    "please hold while i look into that",
    "thank you for holding i appreciate your patience",
    "i am sorry for the trouble let me fix that for you",
    "i have updated your {thing} is there anything else i can help you with",
    "no that is all thank you",
    "is there anything else i can help you with today",
    "your confirmation number is {order_no}",
    "i would like to return the {product} i bought last week",
    "i want to exchange the {product} for a different color",
    "can i get a refund for the {product}",
    "the {product} i ordered on {date} never arrived",
    "when will my {product} be delivered",
    "your {product} will arrive on {day}",
    "it was shipped on {date} and should arrive by {day}",
    "do you have the {product} in {color}",
    "is the {product} in stock at the {city} store",
    "we can ship it to {address}",
    "i need to update my billing address",
    "i need to change my payment method to a new {thing}",
    "can you set up autopay on my account",
    "i would like to pay my bill with a credit card",
    "your payment of {price} has been received",
    "the technician can come on {day} between {time} and {time}",
    "can you schedule an appointment for {day} at {time}",
    "we are open from {time} to {time}",
    "can you call me back at {phone}",
    "i have been on hold for {minutes} minutes",
    "this is the {ordinal} time i have called about this",
    "i already tried that and it did not help",
    "could you repeat that please",
    "sorry i did not catch that",
    "okay let me write that down",
    "perfect thank you so much for your help",
    "have a great day",
    "you too bye",
    "{service_problem}",
    "{greet} {service_problem}",
    "{service_problem} and nobody called me back",
    "i am calling about my {thing} in {city}",
    "my flight from {city} to {city} on {date} was cancelled",
    "i need to change my flight to {day} morning",
    "i would like to book a room in {city} for {days} nights",
    "i need to refill my prescription at the pharmacy on {address}",
    "when does my insurance policy renew",
    "what is the balance on my checking account",
    "i would like to transfer {price} to my savings account",
    "please confirm your date of birth",
    "my date of birth is {month} {ordinal} {year}",
    "i have been a customer since {year}",
    "i want to report a lost card the last four digits are {digits4}",
]
DRIVE_THRU = [
    "welcome to {city} burger what can i get for you today",
    "hi welcome what can i get started for you",
    "can i get {food}",
    "can i get {food} and {food}",
    "i would like {food} and {food} {polite}",
    "{greet} can i get {food} {polite}",
    "let me get {food} with {food}",
    "i will have {food}",
    "i will have the number {count} combo with a {drink}",
    "can i get the number {count} meal with {side} and a {drink}",
    "give me {food} and {food} and {food}",
    "could i get {food} {mod}",
    "make that {item} {mod} please",
    "can you make the {item} {mod}",
    "what comes with the {item}",
    "does the {item} come with {side}",
    "do you have {item} today",
    "can i get some {sauce} with that",
    "can i get extra {sauce}",
    "can i substitute the {side} for {side}",
    "can i upgrade to a {drink}",
    "would you like to make that a meal",
    "would you like a drink with that",
    "what size drink would you like",
    "what kind of sauce would you like",
    "would you like anything else",
    "is that for here or to go",
    "is that everything for you",
    "that is it thank you",
    "actually can you add {food}",
    "actually make that {food} instead",
    "sorry can you take off the {item}",
    "your total is {price} please pull up to the window",
    "your total is {price} at the {ordinal} window",
    "that will be {price}",
    "do you take credit cards",
    "can i pay with my phone",
    "do you have any breakfast items after {time}",
    "how long is the wait for {item}",
    "can i use a coupon for {percent} off",
    "i have a coupon for a free {side}",
    "we are out of {side} right now can i get you {side} instead",
    "please pull forward to the next window",
    "here is your {drink} and your receipt",
    "can i get a cup for water",
    "can i get {count} {side} and {count} {drink}",
    "i would like to place an order for pickup at {time}",
    "i want to order {count} {item} for delivery to {address}",
    "the order is for {first} and it should be ready at {time}",
]
IT_SUPPORT = [
    "thank you for calling the help desk this is {first} what seems to be the problem",
    "it help desk how can i help",
    "{greet} my {it} {it_problem}",
    "my {it} {it_problem} since {day}",
    "my {it} {it_problem} every time i try to log in",
    "the {it} {it_problem} for the whole team",
    "{greet} i cannot log in to my {it}",
    "i forgot my password and now my account is locked",
    "i need to reset my password for the {it}",
    "i get an {error} that says access denied",
    "it says {error} {order_no}",
    "the {error} code is {digits4}",
    "i am getting {error} {digits4} when i open the {it}",
    "can you try to {it_action}",
    "please {it_action} and tell me what you see",
    "first {it_action} then {it_action}",
    "okay i will {it_action}",
    "i already tried to {it_action}",
    "did you try to {it_action}",
    "let me remote into your {it}",
    "can you read me the number on the screen",
    "what is your employee id",
    "my employee id is {digits4}",
    "my username is {first} dot {last}",
    "my email is {first} dot {last} at the company domain",
    "i am working from home and the {it} {it_problem}",
    "i am in the {city} office on the {ordinal} floor",
    "the {it} in conference room {letter} {it_problem}",
    "i need access to the {it} for a new project",
    "can you add me to the shared drive for {dept}",
    "i need a new {it} my old one {it_problem}",
    "how long will it take to fix the {it}",
    "the {it} is down for maintenance until {time}",
    "we are seeing an outage on the {it} right now",
    "i will open a ticket and escalate it to {dept}",
    "your ticket number is {order_no}",
    "i am following up on ticket {order_no}",
    "the update should take about {minutes} minutes",
    "your new password must have at least {count} characters",
    "your license expires on {date}",
    "please do not share your password with anyone",
    "i will send you a link to reset it",
    "did you get the code on your phone",
    "it is working now thank you",
    "it is still not working",
    "now the {it} {it_problem}",
    "is the {it} plugged in and turned on",
    "which version of the {it} are you using",
    "can you restart and call me back in {minutes} minutes",
]
DOMAINS = {"call_center": CALL_CENTER, "drive_thru": DRIVE_THRU, "it_support": IT_SUPPORT}

OUT_OF_DOMAIN = [
    "the weather will be sunny with a chance of rain in the evening",
    "she planted tomatoes and basil in the garden last spring",
    "the museum opens a new exhibit about ancient egypt next month",
    "our team won the championship after a dramatic overtime goal",
    "he reads a chapter of his favorite novel every night before bed",
    "the train to the coast leaves at noon from platform nine",
    "scientists discovered a new species of frog in the rainforest",
    "the recipe calls for two cups of flour and a pinch of salt",
    "we watched the sunset from the top of the mountain",
    "the concert was canceled because the singer lost her voice",
    "my grandmother tells wonderful stories about her childhood",
    "the library is hosting a book sale this weekend",
    "please remember to water the plants while i am away",
    "the children built a sandcastle near the edge of the water",
    "traffic on the highway was heavy because of an accident",
    "the professor explained the theory with a simple example",
    "a strong wind knocked down several trees in the park",
    "they are painting the kitchen a pale shade of green",
    "the marathon route passes through the historic district",
    "i think the movie was better than the original book",
    "the farmers market sells fresh bread and local honey",
    "our neighbors adopted a puppy from the animal shelter",
    "the bridge will be closed for repairs until the end of summer",
    "he practiced the piano for three hours every afternoon",
    "the astronauts returned safely after six months in orbit",
    "this river flows all the way down to the ocean",
    "the election results will be announced tomorrow morning",
    "she speaks four languages and is learning a fifth",
    "the old lighthouse has guided ships for over a century",
    "we should leave early to avoid the crowds at the beach",
]


def _fill(template: str, rng: random.Random) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SLOTS[m.group(1)](rng), template)


def sentence(rng: random.Random) -> str:
    """One domain turn: sometimes two templates of the same domain joined, as callers run sentences on."""
    domain = rng.choice(list(DOMAINS.values()))
    text = _fill(rng.choice(domain), rng)
    if rng.random() < 0.25:
        text += " " + _fill(rng.choice(domain), rng)
    return text


def is_held_out(text: str) -> bool:
    """5% of distinct sentences, by hash, never reach training or the LM."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % 20 == 0


def sentences(seed: int, held_out: bool) -> Iterator[str]:
    """Endless deterministic stream of training (held_out=False) or held-out sentences."""
    rng = random.Random(seed)
    while True:
        s = sentence(rng)
        if is_held_out(s) == held_out:
            yield s


def vocabulary() -> list[str]:
    """Every word the generator can produce (the lexicon), found by enumerating templates and slot lists."""
    words: set[str] = set()
    for templates in DOMAINS.values():
        for t in templates:
            words.update(re.sub(r"\{\w+\}", " ", t).split())
    lists = [
        _ONES,
        _TEENS,
        _TENS[2:],
        _ORDINALS,
        FIRST_NAMES,
        LAST_NAMES,
        CITIES,
        STREETS,
        STREET_TYPES,
        STATES,
        MONTHS,
        DAYS,
        COLORS,
        SIZES,
        LETTERS,
        BURGERS,
        SIDES,
        DRINKS,
        MODIFIERS,
        SAUCES,
        PRODUCTS,
        BRANDS_ISH,
        ACCOUNT_THINGS,
        PROBLEMS_BILLING,
        PROBLEMS_ORDER,
        PROBLEMS_MORE,
        IT_THINGS,
        IT_PROBLEMS,
        IT_ACTIONS,
        ERROR_WORDS,
        PLANS,
        DEPARTMENTS,
        TIMES,
        GREETINGS,
        POLITE_END,
        ["hundred", "thousand", "oh", "dollars", "cents", "and", "percent", "a", "one", "twenty", "thirtieth"],
        ["nineteen", "two"],
        ["forty five", "o clock"],
    ]
    for lst in lists:
        for item in lst:
            words.update(item.split())
    return sorted(words)
