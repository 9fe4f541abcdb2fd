"""Case inputs for the published vectors. Expected values are computed by
reference.py, never written here."""
CODE = "TEST-E64H-2J6I-LT3E-B5TH-DUMA"
RATES = {"USD": "2850.00"}


def base(**kw):
    inv = {
        "merchant_nif": "A1309334L",
        "outlet_id": "kin-gombe-01",
        "pos_terminal_id": "till-1",
        "cashier": {"id": "c-07", "name": "Mbuyi Kalala"},
        "invoice_type": "FV",
        "price_mode": "TTC",
        "client": {"type": "PP"},
        "items": [],
        "payments": [],
    }
    inv.update(kw)
    return inv


def item(code, name, price, qty, group, kind=None, **kw):
    it = {"code": code, "kind": kind or ("TAX" if group in "LN" else "BIE"), "name": name,
          "unit_price": price, "quantity": qty, "tax_group": group}
    it.update(kw)
    return it


def paid(inv, methods=("ESPECES",)):
    """Sets payments to the computed total (split evenly over `methods`, the
    remainder on the first), using reference.py's group rounding."""
    import reference
    from decimal import Decimal
    # recompute totals without the payment check
    sums = {}
    for it in inv["items"]:
        g = it["tax_group"]
        s, x = sums.get(g, (Decimal(0), Decimal(0)))
        s += Decimal(str(it["unit_price"])) * Decimal(str(it["quantity"]))
        if it.get("specific_tax"):
            x += Decimal(it["specific_tax"]["amount"])
        sums[g] = (s, x)
    lines = [reference.group_line(g, inv["price_mode"], *sums[g]) for g in sorted(sums)]
    ttc = reference.totals(lines)["ttc"]
    n = len(methods)
    share = (ttc / n).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
    amounts = [share] * n
    amounts[0] += ttc - share * n
    inv["payments"] = [{"method": m, "amount": format(a, "f")} for m, a in zip(methods, amounts)]
    return inv


def usd(inv, rate="2851.25", date="2026-11-27"):
    inv["currency"] = "USD"
    inv["exchange_rate"] = {"rate": rate, "date": date}
    return inv


def credit(inv, nature="RAM", reference=CODE, t="FA"):
    inv["invoice_type"] = t
    inv["credit_note"] = {"reference": reference, "nature": nature}
    return inv


def canonical_cases():
    c = []
    c.append(("fv-ttc-minimal", paid(base(items=[item("P1", "Pain", "2.5", 2, "B")]))))
    c.append(("fv-ttc-same-invoice-other-spelling", paid(base(items=[item("P1", "Pain", "002.500", "2.000", "B")], currency="CDF", schema="bonopay/invoice/v1"))))
    c.append(("ft-advance-ht", paid(base(invoice_type="FT", price_mode="HT",
        client={"type": "PM", "name": "Kin Trading SARL", "nif": "A0901234B", "address": "Av. du Commerce 12, Gombe"},
        items=[item("ACPT", "Acompte sur commande 2026-118", "1500000", 1, "B", kind="SER")]), ["VIREMENT"])))
    c.append(("fa-credit-note-dashed-reference", paid(credit(base(items=[item("SAV-1", "Savon de Marseille", "1160.00", "1", "B")]), "RAM"))))
    c.append(("fa-credit-note-rrr", paid(credit(base(items=[item("REM", "Remise fidélité", "500", 1, "B", kind="SER")]), "RRR", "RRR"))))
    c.append(("ev-export-usd", paid(usd(base(invoice_type="EV", price_mode="HT",
        client={"type": "PM", "name": "Kampala Imports Ltd", "nif": "UG1000234"},
        items=[item("CU-CATH", "Cathodes de cuivre", "8750.50", "2.125", "E")])), ["VIREMENT"])))
    c.append(("et-export-advance", paid(base(invoice_type="ET",
        client={"type": "PM", "name": "Zambezi Metals", "nif": "ZM4410021"},
        items=[item("ACPT-EX", "Acompte export cobalt", "250000", 1, "E", kind="SER")]), ["VIREMENT"])))
    c.append(("ea-export-credit-note", paid(credit(base(client={"type": "PM", "name": "Zambezi Metals", "nif": "ZM4410021"},
        items=[item("ACPT-EX", "Acompte export cobalt", "250000", "0.5", "E", kind="SER")]), "COR", "ABCD1234EFGH5678IJKL9012", "EA"), ["VIREMENT"])))
    c.append(("unicode-french-and-lingala", paid(base(
        cashier={"id": "c-12", "name": "Ngalula Mbɔ́kɔ"},
        client={"type": "PC", "name": "Maman Élodie Nsimba", "nif": "C7654321Y", "contact": "+243 81 555 0101"},
        items=[item("MK-1", "Mbala ya sukali (sucre) — 1 kg", "3500", "3", "B"),
               item("MK-2", "Ndunda na mafuta ya mbila, épicé", "1200.5", "1.5", "C"),
               item("MK-3", "Kwanga ya Bandundu « spéciale »", "800", 4, "A")],
        comments={"B": "Matondo mingi! Merci de votre visite.", "H": "Caisse n°1 — Gombe"}), ["ESPECES", "MOBILEMONEY"])))
    c.append(("ao-embassy-exempt", paid(base(
        client={"type": "AO", "name": "Ambassade du Royaume de Belgique", "exemption_reference": "EXO-2026-0042"},
        items=[item("FOURN", "Fournitures de bureau", "125000", 1, "D")],
        comments={"A": "Réf. Exo. : EXO-2026-0042"}), ["VIREMENT"])))
    c.append(("specific-tax-and-levies-ht", paid(base(price_mode="HT",
        client={"type": "PL", "name": "Cabinet Me Kabongo", "nif": "D1122334Z", "email": "cabinet@kabongo.cd"},
        items=[item("BIERE-65", "Bière 65 cl", "1800", "24", "B", specific_tax={"amount": "2160", "rate": "5"}),
               item("FPI", "Redevance FPI", "350", 1, "L"),
               item("CARB-1", "Gasoil (litre)", "2950.75", "40.250", "M"),
               item("TVAS-1", "TVA spécifique gasoil", "18500", 1, "N")]), ["CARTEBANCAIRE", "CREDIT"])))
    c.append(("price-reduction-and-escapes", paid(base(
        items=[item("TV-55", "Téléviseur 55\" \\ modèle 2026", "1450000", 1, "B", original_price="1600000", price_modification="remise 9,375%"),
               item("CABLE", "Câble HDMI", "15000", "2", "B")]), ["CHEQUES", "AUTRE"])))
    c.append(("public-contract-groups-f-g", paid(base(price_mode="HT",
        client={"type": "PM", "name": "Projet Routes Kasaï (financement BAD)", "nif": "E5566778W"},
        items=[item("GRAV", "Gravier concassé (t)", "85000", "120.5", "F"),
               item("TRANS", "Transport", "450000", 3, "G", kind="SER"),
               item("CAUT", "Caution emballages", "10000", 2, "I"),
               item("DEB", "Débours douane", "75000", 1, "J", kind="SER"),
               item("CONS", "Consignation fûts", "5000", 6, "H"),
               item("NA", "Prestation sous-traitant non assujetti", "20000", 1, "K", kind="SER")]), ["VIREMENT"])))
    c.append(("usd-ttc-retail", paid(usd(base(items=[item("PHONE", "Téléphone", "149.99", 1, "B"), item("CASE", "Étui", "9.5", 2, "C")]), "2849.5"), ["CARTEBANCAIRE"])))
    return c


def tax_cases():
    t = []
    def add(name, inv, rates=None):
        t.append((name, inv, rates))

    add("group-a-exempt-ttc", paid(base(items=[item("A1", "Médicament", "12500", 2, "A")])))
    add("group-b-16-ttc", paid(base(items=[item("B1", "Savon", "1160", 1, "B")])))
    add("group-b-16-ht", paid(base(price_mode="HT", items=[item("B1", "Savon", "1000", 1, "B")])))
    add("group-c-8-ttc", paid(base(items=[item("C1", "Farine", "5400", "2.5", "C")])))
    add("group-c-8-ht", paid(base(price_mode="HT", items=[item("C1", "Farine", "5000", "2.5", "C")])))
    add("group-d-derogatory", paid(base(client={"type": "AO", "name": "Ambassade", "exemption_reference": "EXO-1"},
        comments={"A": "Réf. Exo. : EXO-1"}, items=[item("D1", "Fournitures", "116000", 1, "D")])))
    add("group-e-export", paid(base(invoice_type="EV", items=[item("E1", "Cuivre", "950000.25", "3.333", "E")])))
    add("groups-f-g-public-contracts-ht", paid(base(price_mode="HT", items=[item("F1", "Gravier", "85000", "120.5", "F"), item("G1", "Transport", "450000", 3, "G", kind="SER")])))
    add("groups-h-i-j-k", paid(base(items=[item("H1", "Consignation", "5000", 6, "H"), item("I1", "Caution", "10000", 2, "I"),
        item("J1", "Débours", "75000", 1, "J", kind="SER"), item("K1", "Non assujetti", "20000", 1, "K", kind="SER")])))
    add("group-l-levy-outside-vat-base", paid(base(items=[item("B1", "Bière", "2320", 6, "B"), item("L1", "Redevance", "350", 1, "L")])))
    add("groups-m-n-regulated-fuel-ht", paid(base(price_mode="HT", items=[item("M1", "Gasoil (litre)", "2950.75", "40.25", "M"), item("N1", "TVA spécifique gasoil", "18500", 1, "N")])))
    add("specific-tax-ht-raises-base", paid(base(price_mode="HT", items=[item("BI", "Bière 65 cl", "1800", 24, "B", specific_tax={"amount": "2160", "rate": "5"})])))
    add("specific-tax-ttc", paid(base(items=[item("BI", "Bière 65 cl", "2500", 24, "B", specific_tax={"amount": "2160"})])))
    add("rounding-edge-tax-rounded-up", paid(base(items=[item("R1", "Bonbon", "0.04", 1, "B")])))
    add("rounding-edge-tax-absorbs-cent-c", paid(base(items=[item("R2", "Allumettes", "0.07", 1, "C")])))
    add("rounding-sum-of-exact-lines-not-per-line", paid(base(items=[item("X1", "Vis", "0.33", "0.5", "B"), item("X2", "Écrou", "0.33", "0.5", "B"), item("X3", "Rondelle", "0.33", "0.5", "B")])))
    add("mixed-groups-multiple-payments", paid(base(items=[item("B1", "Huile", "8700", "3", "B"), item("C1", "Riz 25kg", "64800", 1, "C"),
        item("A1", "Pain", "500", 10, "A")]), ["ESPECES", "MOBILEMONEY", "CARTEBANCAIRE"]))
    add("usd-ttc-converted-to-cdf", paid(usd(base(items=[item("PH", "Téléphone", "149.99", 1, "B"), item("ET", "Étui", "9.5", 2, "C")]))), RATES)
    add("usd-ht-export", paid(usd(base(invoice_type="EV", price_mode="HT", items=[item("CU", "Cathodes", "8750.5", "2.125", "E")]), "2830.00")), RATES)
    add("credit-note-fa", paid(credit(base(items=[item("B1", "Savon", "1160", "0.5", "B")]))))
    add("credit-note-rrr-ht", paid(credit(base(price_mode="HT", items=[item("REM", "Remise", "1000", 1, "B", kind="SER")]), "RRR", "RRR")))
    ok = paid(base(items=[item("B1", "Savon", "1160", 3, "B")]))
    ok["tax_groups"] = [{"group": "B", "base": "3000.00", "tax": "480.00", "total": "3480.00"}]
    ok["totals"] = {"ht": "3000", "vat": "480", "specific_tax": "0", "ttc": "3480.00"}
    add("client-computed-values-match", ok)
    bad = paid(base(items=[item("B1", "Savon", "1160", 3, "B")]))
    bad["tax_groups"] = [{"group": "B", "base": "2999.99", "tax": "480.01", "total": "3480.00"}]
    bad["totals"] = {"vtotal": "480.01"}
    add("error-client-computed-values-mismatch", bad)
    mis = base(items=[item("B1", "Savon", "1160", 1, "B")], payments=[{"method": "ESPECES", "amount": "1000"}, {"method": "MOBILEMONEY", "amount": "100"}])
    add("error-payments-do-not-sum-to-total", mis)
    add("error-usd-rate-outside-tolerance", paid(usd(base(items=[item("PH", "Téléphone", "100", 1, "B")]), "2900.00")), RATES)
    add("error-usd-without-reference-rate", paid(usd(base(items=[item("PH", "Téléphone", "100", 1, "B")]))), None)
    add("error-specific-tax-above-base", paid(base(items=[item("BI", "Bière", "100", 1, "B", specific_tax={"amount": "500"})])))
    return t
