// Every page: the light/dark toggle (remembered in this browser).
(() => {
  const root = document.documentElement;
  const saved = localStorage.getItem('gantry-theme');
  if (saved) root.dataset.theme = saved;
  const toggle = () => {
    const dark = root.dataset.theme
      ? root.dataset.theme === 'dark'
      : matchMedia('(prefers-color-scheme: dark)').matches;
    root.dataset.theme = dark ? 'light' : 'dark';
    localStorage.setItem('gantry-theme', root.dataset.theme);
  };
  document.addEventListener('DOMContentLoaded', () => {
    const button = document.getElementById('theme-toggle');
    if (button) button.addEventListener('click', toggle);
  });
})();
