#!/usr/bin/env python3
"""Second, independent implementation of docs/format.md (standard library only).

It computes the expected values of the published vectors:
    bonopay-core/tests/vectors/canonical.json
    bonopay-tax/tests/vectors/tax.json
from the case inputs in cases.py. The Rust tests replay those files, so the
Rust code and this script must agree byte for byte. Run from anywhere:

    python3 tools/vectors/reference.py           # rewrite the vector files
    python3 tools/vectors/reference.py --check   # fail if they differ (CI)
"""
import hashlib
import json
import os
import sys
from decimal import Decimal, ROUND_HALF_UP, getcontext

getcontext().prec = 60

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import cases  # noqa: E402

SCHEMA = "bonopay/invoice/v1"
CENT = Decimal("0.01")


def dec(v):
    if isinstance(v, bool) or isinstance(v, float):
        raise ValueError("cases must not use floats or booleans as decimals")
    return Decimal(str(v))


def fixed(v, places):
    d = dec(v)
    q = d.quantize(Decimal(1).scaleb(-places))
    if q != d:
        raise ValueError(f"{v} has more than {places} places")
    return format(q, "f")


def rhu(d):
    return d.quantize(CENT, rounding=ROUND_HALF_UP)


def m2(d):
    return format(rhu(d), "f")


def rate_str(d):
    d = d.normalize()
    if d == d.to_integral_value():
        d = d.quantize(Decimal(1))
    s = format(d, "f")
    if "." not in s:
        s += ".00"
    elif len(s.split(".")[1]) < 2:
        s += "0" * (2 - len(s.split(".")[1]))
    return s


# --- canonical form (docs/format.md section 2) ---------------------------

def canonical_obj(inv):
    c = inv["client"]
    client = {k: c[k] for k in ("address", "contact", "email", "exemption_reference", "name", "nif") if c.get(k) is not None}
    client["type"] = c["type"]
    out = {
        "cashier": {"id": inv["cashier"]["id"], "name": inv["cashier"]["name"]},
        "client": client,
        "currency": inv.get("currency") or "CDF",
        "invoice_type": inv["invoice_type"],
        "merchant_nif": inv["merchant_nif"],
        "outlet_id": inv["outlet_id"],
        "pos_terminal_id": inv["pos_terminal_id"],
        "price_mode": inv["price_mode"],
        "schema": SCHEMA,
    }
    if inv.get("comments"):
        out["comments"] = dict(inv["comments"])
    if inv.get("credit_note"):
        cn = inv["credit_note"]
        out["credit_note"] = {"nature": cn["nature"], "reference": cn["reference"].replace("-", "")}
    if inv.get("exchange_rate"):
        fx = inv["exchange_rate"]
        out["exchange_rate"] = {"date": fx["date"], "rate": fixed(fx["rate"], 6)}
    items = []
    for it in inv["items"]:
        o = {
            "code": it["code"], "kind": it["kind"], "name": it["name"],
            "quantity": fixed(it["quantity"], 3), "tax_group": it["tax_group"],
            "unit_price": fixed(it["unit_price"], 2),
        }
        if it.get("original_price") is not None:
            o["original_price"] = fixed(it["original_price"], 2)
        if it.get("price_modification") is not None:
            o["price_modification"] = it["price_modification"]
        if it.get("specific_tax") is not None:
            st = {"amount": fixed(it["specific_tax"]["amount"], 2)}
            if it["specific_tax"].get("rate") is not None:
                st["rate"] = fixed(it["specific_tax"]["rate"], 2)
            o["specific_tax"] = st
        items.append(o)
    out["items"] = items
    out["payments"] = [{"amount": fixed(p["amount"], 2), "method": p["method"]} for p in inv["payments"]]
    return out


def canonical_text(inv):
    # RFC 8785 for a document of strings/objects/arrays with ASCII keys:
    # sorted keys, no whitespace, minimal escaping, UTF-8.
    return json.dumps(canonical_obj(inv), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


# --- tax computation (docs/format.md section 3) --------------------------

TABLE = {
    "A": ("0", "no_invoiced_vat"), "B": ("16", "vat"), "C": ("8", "vat"),
    "D": ("0", "no_invoiced_vat"), "E": ("0", "vat"), "F": ("16", "vat"),
    "G": ("8", "vat"), "H": ("0", "no_invoiced_vat"), "I": ("0", "no_invoiced_vat"),
    "J": ("0", "no_invoiced_vat"), "K": ("0", "no_invoiced_vat"), "L": ("0", "levy"),
    "M": ("0", "no_invoiced_vat"), "N": ("0", "specific_vat"),
}
METHODS = ["ESPECES", "VIREMENT", "CARTEBANCAIRE", "MOBILEMONEY", "CHEQUES", "CREDIT", "AUTRE"]


def group_line(g, mode, s, x):
    pct = Decimal(TABLE[g][0])
    treat = TABLE[g][1]
    r = pct / 100
    adjusted = False
    rate = pct
    if treat == "vat":
        if mode == "TTC":
            t = rhu(s)
            b = rhu(t / (1 + r))
            v = t - b
            adjusted = v != rhu(b * r)
        else:
            b = rhu(s + x)
            v = rhu(b * r)
            t = b + v
    else:
        rate = Decimal(0)
        if treat == "no_invoiced_vat":
            b = rhu(s) if mode == "TTC" else rhu(s + x)
            v, t = Decimal(0), b
        elif treat == "levy":
            t = b = rhu(s)
            v = Decimal(0)
        else:  # specific_vat
            t = v = rhu(s)
            b = Decimal(0)
    return {"group": g, "rate": rate, "treatment": treat, "base": b, "tax": v, "total": t, "specific_tax": x, "rounding_adjusted": adjusted}


def totals(lines):
    ttc = sum((l["total"] for l in lines), Decimal(0))
    vat = sum((l["tax"] for l in lines), Decimal(0))
    spec = sum((l["specific_tax"] for l in lines), Decimal(0))
    lev = sum((l["total"] for l in lines if l["treatment"] == "levy"), Decimal(0))
    return {"ht": ttc - vat - spec - lev, "vat": vat, "specific_tax": spec, "levies": lev, "ttc": ttc}


def line_json(l):
    return {"group": l["group"], "rate": rate_str(l["rate"]), "treatment": l["treatment"],
            "base": m2(l["base"]), "tax": m2(l["tax"]), "total": m2(l["total"]),
            "specific_tax": m2(l["specific_tax"]), "rounding_adjusted": l["rounding_adjusted"]}


def totals_json(t):
    return {k: m2(t[k]) for k in ("ht", "vat", "specific_tax", "levies", "ttc")}


def compute(inv, reference_rates):
    errors = []
    sums = {}
    for it in inv["items"]:
        g = it["tax_group"]
        s, x = sums.get(g, (Decimal(0), Decimal(0)))
        s += dec(it["unit_price"]) * dec(it["quantity"])
        if it.get("specific_tax"):
            x += dec(it["specific_tax"]["amount"])
        sums[g] = (s, x)
    mode = inv["price_mode"]
    lines = [group_line(g, mode, *sums[g]) for g in sorted(sums)]
    for l in lines:
        if l["specific_tax"] > l["base"]:
            errors.append({"path": "items", "code": "specific_tax_exceeds_base"})
    tot = totals(lines)
    if tot["ttc"] <= 0:
        errors.append({"path": "items", "code": "not_positive"})
    paid = sum((dec(p["amount"]) for p in inv["payments"]), Decimal(0))
    if paid != tot["ttc"]:
        errors.append({"path": "payments", "code": "payments_mismatch"})
    per = {}
    for p in inv["payments"]:
        per[p["method"]] = per.get(p["method"], Decimal(0)) + dec(p["amount"])
    payments = [{"method": k, "amount": m2(per[k])} for k in METHODS if k in per]
    by_group = {l["group"]: l for l in lines}
    for i, cg in enumerate(inv.get("tax_groups") or []):
        l = by_group.get(cg["group"])
        if l is None:
            errors.append({"path": f"tax_groups[{i}].group", "code": "client_total_mismatch"})
            continue
        for k in ("base", "tax", "total"):
            if dec(cg[k]) != l[k]:
                errors.append({"path": f"tax_groups[{i}].{k}", "code": "client_total_mismatch"})
    if inv.get("tax_groups") is not None:
        sent = {cg["group"] for cg in inv["tax_groups"]}
        for l in lines:
            if l["group"] not in sent:
                errors.append({"path": "tax_groups", "code": "client_total_mismatch"})
    ct = inv.get("totals") or {}
    for k, alias in (("ht", None), ("vat", "vtotal"), ("specific_tax", None), ("ttc", "total")):
        v = ct.get(k, ct.get(alias) if alias else None)
        if v is not None and dec(v) != tot[k]:
            errors.append({"path": f"totals.{k}", "code": "client_total_mismatch"})
    result = {"rate_table": "dgi-sfe-2025-05", "price_mode": mode, "currency": inv.get("currency") or "CDF",
              "groups": [line_json(l) for l in lines], "totals": totals_json(tot), "payments": payments}
    dgi_src = tot
    cur = inv.get("currency") or "CDF"
    if cur != "CDF":
        fx = inv["exchange_rate"]
        rho = dec(fx["rate"])
        ref = (reference_rates or {}).get(cur)
        if ref is None:
            errors.append({"path": "exchange_rate.rate", "code": "reference_rate_unavailable"})
        elif abs(rho - dec(ref)) > dec(ref) / 100:
            errors.append({"path": "exchange_rate.rate", "code": "exchange_rate_out_of_tolerance"})
        conv = []
        for l in lines:
            t = rhu(l["total"] * rho)
            b = rhu(l["base"] * rho)
            c = dict(l, total=t, base=b, tax=t - b, specific_tax=rhu(l["specific_tax"] * rho))
            conv.append(c)
        ctot = totals(conv)
        result["cdf"] = {"currency": "CDF", "exchange_rate": rate_str(rho),
                         "groups": [line_json(l) for l in conv], "totals": totals_json(ctot)}
        dgi_src = ctot
    result["dgi"] = {"total": m2(dgi_src["ttc"]), "vtotal": m2(dgi_src["vat"])}
    if errors:
        return {"errors": errors}
    return result


CHECK = "--check" in sys.argv
STALE = []


def write(path, data):
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    if CHECK:
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            STALE.append(path)
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main():
    canon = []
    for name, inv in cases.canonical_cases():
        text = canonical_text(inv)
        canon.append({"name": name, "input": inv, "canonical": text,
                      "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
    write(os.path.join(ROOT, "bonopay-core/tests/vectors/canonical.json"), canon)
    tax = []
    for name, inv, rates in cases.tax_cases():
        entry = {"name": name, "invoice": inv}
        if rates:
            entry["reference_rates"] = rates
        entry["expected"] = compute(inv, rates)
        tax.append(entry)
    os.makedirs(os.path.join(ROOT, "bonopay-tax/tests/vectors"), exist_ok=True)
    write(os.path.join(ROOT, "bonopay-tax/tests/vectors/tax.json"), tax)
    if STALE:
        print("vector files differ from what reference.py computes (edited by hand?):", *STALE, sep="\n  ")
        sys.exit(1)
    print(f"{len(canon)} canonical cases, {len(tax)} tax cases" + (" (checked)" if CHECK else ""))


if __name__ == "__main__":
    main()
