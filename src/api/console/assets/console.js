// Warrant's console: live updates, and nothing else. Pages work without it.
// A page that wants them names an event topic on <main data-live="...">; when the server says
// that topic changed, the page's live region is fetched again and swapped in.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const region = document.querySelector("[data-live]");
  if (!region || typeof EventSource === "undefined") return;
  const topic = region.getAttribute("data-live");
  const events = new EventSource("/console/events?topic=" + encodeURIComponent(topic));
  let fetching = false;
  let waiting = false;
  const typing = () =>
    region.contains(document.activeElement) &&
    document.activeElement.matches("input, textarea, select");
  const refresh = async () => {
    // Never wipe what someone is typing: refresh once they leave the field.
    if (typing()) {
      waiting = true;
      return;
    }
    if (fetching) return;
    fetching = true;
    waiting = false;
    try {
      const answer = await fetch(window.location.href, { credentials: "same-origin" });
      if (!answer.ok) return;
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.querySelector("[data-live]");
      if (fresh) region.replaceChildren(...fresh.childNodes);
    } finally {
      fetching = false;
    }
  };
  events.addEventListener(topic, refresh);
  region.addEventListener("focusout", () => {
    if (waiting) setTimeout(refresh, 0);
  });
});
