// Only for notifications where a page cannot show them itself (Android's Chrome): a click
// brings the dashboard's tab forward and opens the conversation. Nothing is cached.

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const id = event.notification.data?.id;
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((tabs) => {
      const tab = tabs[0];
      if (tab === undefined) return self.clients.openWindow(id ? `/#c=${encodeURIComponent(id)}` : "/");
      tab.postMessage({ open: id });
      return tab.focus();
    }),
  );
});
