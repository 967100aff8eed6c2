// The sign-in page: one button per enabled identity provider, and who is signed in (the
// session cookie is sent with same-origin requests).
"use strict";

async function showProviders() {
  const list = document.getElementById("provider-list");
  const answer = await fetch("/v1/sso/providers", { credentials: "same-origin" });
  if (!answer.ok) return;
  const { items } = await answer.json();
  document.getElementById("no-providers").hidden = items.length > 0;
  const back = new URLSearchParams(location.search).get("return_to") || "/login";
  for (const p of items) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.className = "provider";
    a.id = "sso-" + p.id;
    a.href = p.login_url + "?return_to=" + encodeURIComponent(back);
    a.textContent = "Sign in with " + p.display_name;
    li.appendChild(a);
    list.appendChild(li);
  }
}

async function showUser() {
  const answer = await fetch("/v1/me", { credentials: "same-origin" });
  if (!answer.ok) return;
  const me = await answer.json();
  const who = document.getElementById("whoami");
  who.textContent = "Signed in as " + (me.email || me.id) + ".";
  who.hidden = false;
}

showProviders();
showUser();
