// Live tables: a table with data-live (a server-sent events URL) and data-rows (its rows as
// HTML) reloads its rows whenever the server says something changed. The rows come from the
// server already escaped; nothing of a message's content is ever built as markup here.
"use strict";
for (const table of document.querySelectorAll("table[data-live]")) {
  const source = new EventSource(table.dataset.live);
  source.addEventListener("changed", async () => {
    const answer = await fetch(table.dataset.rows, { credentials: "same-origin" });
    if (answer.ok) {
      table.querySelector("tbody").innerHTML = await answer.text();
      table.hidden = false;
      const empty = document.getElementById("empty");
      if (empty) empty.hidden = true;
    }
  });
}
