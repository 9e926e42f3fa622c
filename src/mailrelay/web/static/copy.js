// Copy buttons: a button with data-copy="ID" puts the text of the element with that id on the
// clipboard (navigator.clipboard), and selects that text too, so it can be copied by hand
// where the clipboard is not allowed. The text is read as text; nothing is built as markup.
"use strict";
for (const button of document.querySelectorAll("button[data-copy]")) {
  const label = button.textContent;
  button.addEventListener("click", async () => {
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    window.getSelection().selectAllChildren(source);
    try {
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = "Copied";
    } catch (err) {
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { button.textContent = label; }, 2000);
  });
}
