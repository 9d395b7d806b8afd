// Keyboard shortcuts: any element with data-key="<key>" is clicked when that key is pressed
// (a accept, r retouch, x reject, j next, k previous, q queue), except while typing in a field.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
  const element = document.querySelector(`[data-key="${CSS.escape(event.key)}"]`);
  if (element) {
    event.preventDefault();
    element.click();
  }
});
