/* A display equation wider than its column (on a phone) is set in a smaller size until it fits,
   down to MIN_SCALE of its size; one that fits is left alone. When done, the page is marked
   with data-math-fitted (tests/browser waits for it and measures every equation). */
(function () {
  "use strict";
  const MIN_SCALE = 0.55;

  function fit() {
    document.querySelectorAll('mjx-container[display="true"]').forEach(function (box) {
      if (box.dataset.fontSize === undefined) {
        box.dataset.fontSize = parseFloat(getComputedStyle(box).fontSize);
      }
      const size = parseFloat(box.dataset.fontSize);
      box.style.fontSize = size + "px";
      const math = box.querySelector("mjx-math") || box;
      const width = math.getBoundingClientRect().width;
      const room = box.parentElement.clientWidth;
      if (width > room && width > 0) {
        const scale = Math.max(MIN_SCALE, (0.98 * room) / width);
        box.style.fontSize = (size * scale).toFixed(2) + "px";
        box.dataset.scale = scale.toFixed(2);
      } else {
        delete box.dataset.scale;
      }
    });
    document.documentElement.dataset.mathFitted = "1";
  }

  function whenTypeset() {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      MathJax.startup.promise.then(fit);
    } else {
      setTimeout(whenTypeset, 50);
    }
  }

  let pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(fit, 150);
  });
  whenTypeset();
})();
